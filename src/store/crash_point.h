// Named points where a test can make this process die as if by kill -9.
//
// Set AERIALS_CRASH_POINT=<name> in a test process's environment; when the
// code reaches that point the process sends itself SIGKILL. Nothing else reads
// the variable, and an unset variable costs one cached lookup.
#pragma once

namespace aerials::store {

void crash_point(const char* name);

}  // namespace aerials::store
