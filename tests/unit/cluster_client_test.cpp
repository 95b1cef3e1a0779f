#include <boost/test/unit_test.hpp>

#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "cluster/cluster_client.h"
#include "cluster/http_exchange.h"

using namespace aerials::cluster;

namespace {

// A listening socket on 127.0.0.1 that accepts and never answers: a hung node.
struct SilentListener {
    int fd = -1;
    int port = 0;
    SilentListener() {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        BOOST_REQUIRE(::listen(fd, 8) == 0);
        socklen_t n = sizeof a;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
        port = ntohs(a.sin_port);
    }
    ~SilentListener() { ::close(fd); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster_client)

BOOST_AUTO_TEST_CASE(cluster_urls_are_parsed_into_seeds) {
    BOOST_TEST(parse_cluster_url("http://127.0.0.1:9080") == std::vector<std::string>{"127.0.0.1:9080"});
    BOOST_TEST(parse_cluster_url("http://a:1/, http://b:2") == (std::vector<std::string>{"a:1", "b:2"}));
    for (const char* bad : {"", "127.0.0.1:9080", "https://a:1", "http://a", "http://a:x", "http://a:1/path", "http://:"}) {
        BOOST_CHECK_THROW(parse_cluster_url(bad), std::invalid_argument);
    }
}

BOOST_AUTO_TEST_CASE(token_files_are_trimmed_and_checked) {
    std::string path = "/tmp/aerials_token_test_" + std::to_string(::getpid());
    {
        std::ofstream out(path);
        out << "  secret-token-value \n";
    }
    BOOST_TEST(read_token_file(path) == "secret-token-value");
    {
        std::ofstream out(path);
        out << " \n";
    }
    BOOST_CHECK_THROW(read_token_file(path), std::invalid_argument);
    std::remove(path.c_str());
    BOOST_CHECK_THROW(read_token_file(path), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_silent_node_times_out_with_its_address) {
    SilentListener node;
    HttpSettings settings;
    settings.idle_timeout = std::chrono::milliseconds(300);
    HttpMulti multi(settings);
    std::string address = "127.0.0.1:" + std::to_string(node.port);
    Exchange e(address, "/v1/cluster/map", "", "");
    auto start = std::chrono::steady_clock::now();
    multi.run_all({&e});
    auto took = std::chrono::steady_clock::now() - start;
    BOOST_TEST(e.done());
    BOOST_TEST(e.status() == 0);
    BOOST_TEST(e.error().find(address) != std::string::npos, e.error());
    BOOST_TEST(e.error().find("did not answer") != std::string::npos, e.error());
    BOOST_TEST(took < std::chrono::seconds(5));  // a bound on the hang, not a speed measurement
}

BOOST_AUTO_TEST_CASE(an_unreachable_seed_fails_the_map_fetch_naming_it) {
    int port;
    {
        SilentListener gone;  // a port that was free a moment ago and is closed now
        port = gone.port;
    }
    ClusterSettings settings;
    settings.seeds = {"127.0.0.1:" + std::to_string(port)};
    settings.token = "t";
    ClusterClient client(settings);
    try {
        client.map();
        BOOST_FAIL("no map expected");
    } catch (const NodeError& e) {
        BOOST_TEST(std::string(e.what()).find(settings.seeds[0]) != std::string::npos, e.what());
    }
}

BOOST_AUTO_TEST_SUITE_END()
