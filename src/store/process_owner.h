// Who runs a transaction, in a form another process on this machine can
// check: "pid:starttime". The start time (from /proc) tells a live owner
// from a new process that reused its pid.
#pragma once

#include <string>

namespace aerials::store {

std::string this_process_owner();

// False only when the owner's process is certainly gone (or never existed on
// this machine); a malformed owner counts as gone.
bool owner_alive(const std::string& owner);

}  // namespace aerials::store
