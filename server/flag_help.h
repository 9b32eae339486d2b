// `squeezeserve --help`: every flag of the server with its default and its explanation, on stdout,
// exit 0. (absl's own --help exits 1 and names the source file a flag is defined in, which is a path
// of the build machine.)
#pragma once

#include <string>
#include "absl/strings/string_view.h"

namespace squeezeserve::server {

// True when argv asks for help (--help, -h, --helpfull, --helpshort, with one or two dashes).
bool WantsHelp(int argc, char** argv);

// `usage`, then the flags defined in a source file whose path ends with `defined_in`, sorted by name.
std::string FlagsHelp(absl::string_view usage, absl::string_view defined_in);

}  // namespace squeezeserve::server
