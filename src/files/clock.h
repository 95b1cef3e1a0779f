// Time as the files layer records it: Unix milliseconds. The collector takes
// its "now" as an argument instead (aerials_collect(root, now)), so tests can
// expire versions without waiting days.
#pragma once

#include <chrono>
#include <cstdint>

namespace aerials::files {

inline int64_t unix_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

inline constexpr int64_t kDayMs = 86400000;

}  // namespace aerials::files
