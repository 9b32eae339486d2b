// libFuzzer target over the store's files layer (engine/context_files.h, engine/safetensors.h,
// engine/context_summary_json.h): a crafted context directory (store_input.h) is listed, its manifest
// read and verified, its generation read, and when it opens, every tensor view touched and the summary
// parsed. Must never crash, hang or trip a sanitizer; statuses are the expected outcome. The loader
// behind it (tensor names, shapes, offsets, finiteness, in libtorch) is fuzzed by store_loader_run.
#include <cstdint>
#include <filesystem>
#include <string>

#include "engine/context_files.h"
#include "engine/context_summary_json.h"
#include "tests/fuzz/store_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path store =
      std::filesystem::temp_directory_path() / ("squeezeserve-store-fuzz-" + std::to_string(getpid()));
  using namespace squeezeserve;  // NOLINT: the functions under test
  if (!fuzz::WriteStoreInput(std::string_view(reinterpret_cast<const char*>(data), size), store, "ctx", "fuzz-model")) {
    return 0;
  }
  (void)ListContextDirs(store.string());
  (void)ReadContextGeneration(store.string(), "ctx");
  absl::StatusOr<nlohmann::json> manifest = ReadContextManifest(store.string(), "ctx");
  if (manifest.ok() && manifest->contains("summary")) (void)SummaryFromJson((*manifest)["summary"]);
  absl::StatusOr<ContextDir> dir = OpenContextDir(store.string(), "ctx", "fuzz-model");
  if (dir.ok()) {
    volatile uint8_t sum = 0;
    for (const auto& [name, view] : dir->tensors->tensors()) {
      const auto* bytes = static_cast<const uint8_t*>(view.data);
      for (size_t i = 0; i < view.nbytes; ++i) sum += bytes[i];
    }
  }
  return 0;
}
