#include "server/flag_help.h"

#include <algorithm>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace squeezeserve::server {
namespace {

constexpr size_t kWidth = 100;

// `text` wrapped at kWidth, every line indented by `indent` spaces; its own line breaks are kept.
std::string Wrap(absl::string_view text, size_t indent) {
  std::string out;
  for (absl::string_view paragraph : absl::StrSplit(text, '\n')) {
    std::string line;
    for (absl::string_view word : absl::StrSplit(paragraph, ' ', absl::SkipEmpty())) {
      if (!line.empty() && indent + line.size() + 1 + word.size() > kWidth) {
        absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
        line.clear();
      }
      absl::StrAppend(&line, line.empty() ? "" : " ", word);
    }
    absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  }
  return out;
}

}  // namespace

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (absl::StartsWith(arg, "--")) arg.remove_prefix(2);
    else if (absl::StartsWith(arg, "-")) arg.remove_prefix(1);
    else continue;
    if (arg == "help" || arg == "h" || arg == "helpfull" || arg == "helpshort") return true;
  }
  return false;
}

std::string FlagsHelp(absl::string_view usage, absl::string_view defined_in) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::EndsWith(flag->Filename(), defined_in)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) { return a->Name() < b->Name(); });
  std::string out = absl::StrCat(Wrap(usage, 0), "\nFlags (--name=value or --name value):\n");
  for (const absl::CommandLineFlag* flag : flags) {
    std::string fallback = flag->DefaultValue();
    if (flag->IsOfType<std::string>()) fallback = absl::StrCat("\"", fallback, "\"");
    absl::StrAppend(&out, "  --", flag->Name(), " (default ", fallback, ")\n", Wrap(flag->Help(), 6));
  }
  absl::StrAppend(&out,
                  "\nAlso: --flagfile FILE reads flags from a file, one per line; --fromenv=a,b reads FLAGS_a and "
                  "FLAGS_b from the environment.\n");
  return out;
}

}  // namespace squeezeserve::server
