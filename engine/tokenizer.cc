#include "engine/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/tokenizer_json.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {

// The dlopen'ed sentencepiece module's entry points.
struct SpmModule {
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
absl::StatusOr<const SpmModule*> LoadModule() {
  static const absl::StatusOr<const SpmModule*> loaded = []() -> absl::StatusOr<const SpmModule*> {
    std::string errors;
    for (const std::string& candidate : ModuleCandidates()) {
      // RTLD_DEEPBIND: sentencepiece resolves its bundled protobuf before the process's libprotobuf.
      void* library = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (library == nullptr) {
        absl::StrAppend(&errors, "\n  ", candidate, ": ", ::dlerror());
        continue;
      }
      auto* module = new SpmModule();
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

namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const SpmModule* module, void* handle)
      : module_(module), handle_(handle), piece_size_(module->piece_size(handle)) {}
  ~SentencePieceTokenizer() override { module_->free_processor(handle_); }

  std::vector<int32_t> Encode(std::string_view text, bool add_bos, int32_t bos_id) const override {
    size_t count = 0;
    int32_t* pieces = module_->encode(handle_, text.data(), text.size(), &count);
    std::vector<int32_t> ids;
    ids.reserve(count + 1);
    if (add_bos && bos_id >= 0) ids.push_back(bos_id);
    ids.insert(ids.end(), pieces, pieces + count);
    module_->free_buffer(pieces);
    return ids;
  }

  std::string Decode(const int32_t* ids, size_t count, bool /*skip_special_tokens*/) const override {
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

  int64_t vocab_size() const override { return piece_size_; }

 private:
  const SpmModule* module_;
  void* handle_;
  int64_t piece_size_;
};

class HfJsonTokenizer : public Tokenizer {
 public:
  explicit HfJsonTokenizer(std::unique_ptr<HfTokenizer> hf) : hf_(std::move(hf)) {}
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, int32_t /*bos_id*/) const override {
    return hf_->Encode(text, add_bos);
  }
  std::string Decode(const int32_t* ids, size_t count, bool skip_special_tokens) const override {
    return hf_->Decode(absl::MakeConstSpan(ids, count), skip_special_tokens);
  }
  int64_t vocab_size() const override { return hf_->vocab_size(); }

 private:
  std::unique_ptr<HfTokenizer> hf_;
};

absl::StatusOr<std::string> ReadWholeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// bos_token / eos_token are a string or an AddedToken object {"content": ...}.
std::string TokenString(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return "";
}

// chat_template is a string, or a list of {"name", "template"} of which "default" is the chat one.
std::string ChatTemplate(const nlohmann::json& config) {
  auto it = config.find("chat_template");
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default") return entry.value("template", "");
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  auto module = LoadModule();
  if (!module.ok()) return module.status();
  char error[512] = {0};
  void* handle = (*module)->load(path.c_str(), error, sizeof(error));
  if (handle == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a sentencepiece model: ", error));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(*module, handle));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfJson(std::string_view tokenizer_json) {
  auto hf = HfTokenizer::FromJson(tokenizer_json);
  if (!hf.ok()) return hf.status();
  return std::unique_ptr<Tokenizer>(new HfJsonTokenizer(std::move(*hf)));
}

absl::StatusOr<CheckpointTokenizer> LoadCheckpointTokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  CheckpointTokenizer result;
  std::error_code ec;
  const fs::path json_path = fs::path(dir) / "tokenizer.json";
  const fs::path spm_path = fs::path(dir) / "tokenizer.model";
  if (fs::exists(json_path, ec)) {
    auto text = ReadWholeFile(json_path);
    if (!text.ok()) return text.status();
    auto tokenizer = Tokenizer::FromHfJson(*text);
    if (!tokenizer.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(json_path.string(), ": ", tokenizer.status().message()));
    }
    result.tokenizer = std::move(*tokenizer);
    result.source = "tokenizer.json";
    absl::StrAppend(&result.fingerprint_input, "tokenizer.json:", text->size(), ":", *text);
  } else if (fs::exists(spm_path, ec)) {
    auto bytes = ReadWholeFile(spm_path);
    if (!bytes.ok()) return bytes.status();
    auto tokenizer = Tokenizer::Load(spm_path.string());
    if (!tokenizer.ok()) return tokenizer.status();
    result.tokenizer = std::move(*tokenizer);
    result.source = "tokenizer.model";
    absl::StrAppend(&result.fingerprint_input, "tokenizer.model:", bytes->size(), ":", *bytes);
  }
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    auto text = ReadWholeFile(config_path);
    if (!text.ok()) return text.status();
    const nlohmann::json config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
    result.config.bos_token = TokenString(config, "bos_token");
    result.config.eos_token = TokenString(config, "eos_token");
    result.config.chat_template = ChatTemplate(config);
  }
  return result;
}

}  // namespace squeezeserve
