#include "engine/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace squeezeserve {

struct Tokenizer::Module {
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free_processor)(void*) = nullptr;
  int (*piece_size)(void*) = nullptr;
  int32_t* (*encode)(void*, const char*, size_t, size_t*) = nullptr;
  char* (*decode)(void*, const int32_t*, size_t, size_t*) = nullptr;
  void (*free_buffer)(void*) = nullptr;
};

namespace {

constexpr char kModuleFile[] = "libsqueezeserve_spm.so";

std::vector<std::string> ModuleCandidates() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("SQUEEZESERVE_SPM_MODULE"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back((exe.parent_path() / kModuleFile).string());
#ifdef SQUEEZESERVE_SPM_MODULE_PATH
  candidates.push_back(SQUEEZESERVE_SPM_MODULE_PATH);
#endif
  candidates.push_back(kModuleFile);  // the dynamic loader's search path
  return candidates;
}

// Loads the module once per process; the pointers stay valid for its lifetime.
absl::StatusOr<const Tokenizer::Module*> LoadModule() {
  static const absl::StatusOr<const Tokenizer::Module*> loaded = []() -> absl::StatusOr<const Tokenizer::Module*> {
    std::string errors;
    for (const std::string& candidate : ModuleCandidates()) {
      // RTLD_DEEPBIND: sentencepiece resolves its bundled protobuf before the process's libprotobuf.
      void* library = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (library == nullptr) {
        absl::StrAppend(&errors, "\n  ", candidate, ": ", ::dlerror());
        continue;
      }
      auto* module = new Tokenizer::Module();
      bool ok = true;
      auto bind = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(library, name));
        ok = ok && fn != nullptr;
      };
      bind(module->load, "squeezeserve_spm_load");
      bind(module->free_processor, "squeezeserve_spm_free");
      bind(module->piece_size, "squeezeserve_spm_piece_size");
      bind(module->encode, "squeezeserve_spm_encode");
      bind(module->decode, "squeezeserve_spm_decode");
      bind(module->free_buffer, "squeezeserve_spm_free_buffer");
      if (ok) return module;
      delete module;
      absl::StrAppend(&errors, "\n  ", candidate, ": missing entry points");
    }
    return absl::FailedPreconditionError(absl::StrCat("cannot load the sentencepiece module ", kModuleFile,
                                                      " (set SQUEEZESERVE_SPM_MODULE):", errors));
  }();
  return loaded;
}

}  // namespace

Tokenizer::Tokenizer(const Module* module, void* handle)
    : module_(module), handle_(handle), piece_size_(module->piece_size(handle)) {}

Tokenizer::~Tokenizer() { module_->free_processor(handle_); }

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  auto module = LoadModule();
  if (!module.ok()) return module.status();
  char error[512] = {0};
  void* handle = (*module)->load(path.c_str(), error, sizeof(error));
  if (handle == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a sentencepiece model: ", error));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(*module, handle));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos, int32_t bos_id) const {
  size_t count = 0;
  int32_t* pieces = module_->encode(handle_, text.data(), text.size(), &count);
  std::vector<int32_t> ids;
  ids.reserve(count + 1);
  if (add_bos && bos_id >= 0) ids.push_back(bos_id);
  ids.insert(ids.end(), pieces, pieces + count);
  module_->free_buffer(pieces);
  return ids;
}

std::string Tokenizer::Decode(const int32_t* ids, size_t count) const {
  std::vector<int32_t> valid;
  valid.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] >= 0 && ids[i] < piece_size_) valid.push_back(ids[i]);
  }
  size_t length = 0;
  char* text = module_->decode(handle_, valid.data(), valid.size(), &length);
  std::string out(text, length);
  module_->free_buffer(text);
  return out;
}

}  // namespace squeezeserve
