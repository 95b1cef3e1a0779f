// The parts of the transaction machinery that run without SQL: the commit
// lanes (also under TSan), owner identities, and a store's commit of several
// buckets through its C++ interface.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <unistd.h>

#include "store/commit_lanes.h"
#include "store/process_owner.h"
#include "store/value_codec.h"

using namespace aerials::store;

BOOST_AUTO_TEST_SUITE(transaction)

BOOST_AUTO_TEST_CASE(commit_lanes_run_every_index_once_and_report_failures_by_index) {
    CommitLanes lanes(3);
    for (size_t n : {0, 1, 2, 7, 64}) {
        std::vector<std::atomic<int>> runs(n);
        auto errors = lanes.run(n, [&](size_t i) {
            runs[i].fetch_add(1);
            if (i % 5 == 3) throw std::runtime_error("lane " + std::to_string(i));
        });
        BOOST_REQUIRE_EQUAL(errors.size(), n);
        for (size_t i = 0; i < n; ++i) {
            BOOST_CHECK_EQUAL(runs[i].load(), 1);
            BOOST_CHECK_EQUAL(static_cast<bool>(errors[i]), i % 5 == 3);
        }
    }
}

BOOST_AUTO_TEST_CASE(commit_lanes_are_reused_across_many_runs) {
    CommitLanes lanes(4);
    std::atomic<int64_t> total{0};
    for (int round = 0; round < 500; ++round) {
        lanes.run(10, [&](size_t i) { total.fetch_add(static_cast<int64_t>(i)); });
    }
    BOOST_CHECK_EQUAL(total.load(), 500 * 45);
}

BOOST_AUTO_TEST_CASE(owner_identity_names_this_live_process_and_not_a_dead_one) {
    std::string me = this_process_owner();
    BOOST_CHECK_EQUAL(me.substr(0, me.find(':')), std::to_string(::getpid()));
    BOOST_CHECK(owner_alive(me));
    // The same pid with another start time is another (dead) process.
    BOOST_CHECK(!owner_alive(std::to_string(::getpid()) + ":1"));
    BOOST_CHECK(!owner_alive("999999999:1"));
    BOOST_CHECK(!owner_alive("garbage"));
    BOOST_CHECK(!owner_alive(""));
}

BOOST_AUTO_TEST_CASE(log_data_renders_as_json_and_rejects_damage) {
    std::string encoded = std::string("i") + std::string(7, '\0') + '\x05' + "n";
    BOOST_CHECK_EQUAL(values_as_json(encoded), "[5,null]");
    BOOST_CHECK_EQUAL(values_as_json(""), "[]");
    BOOST_CHECK_THROW(values_as_json("i\x01"), std::invalid_argument);
    BOOST_CHECK_THROW(values_as_json("q"), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
