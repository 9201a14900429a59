// What was built: the version (CMake's project version) and the git commit it was built from
// (read when CMake configured the build; "unknown" outside a git checkout). `--version`, the
// gpuledger_build_info metric and the logs' first line say them.
#pragma once

#include <string_view>

namespace gpuledger::base {

std::string_view BuildVersion();
std::string_view BuildCommit();

}  // namespace gpuledger::base
