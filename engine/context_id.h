// What a context id may look like. Plain C++ with no dependencies, so request validation (and its
// fuzzer) can use it without the rest of the engine.
#pragma once

#include <string_view>

namespace squeezeserve {

// 1-128 characters of [A-Za-z0-9._-], not starting with '.' (ids become directory names).
bool IsValidContextId(std::string_view id);

}  // namespace squeezeserve
