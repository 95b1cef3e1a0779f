#define BOOST_TEST_MODULE aerials_unit_tests
#include <boost/test/unit_test.hpp>
