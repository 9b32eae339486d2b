#include "engine/context_files.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/context_store.h"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

constexpr char kManifest[] = "manifest.json";
constexpr char kManifestChecksum[] = "manifest.sha256";
constexpr char kTensors[] = "tensors.safetensors";
// Temporaries start with '.', which valid context ids never do (IsValidContextId).
// Deletes `path` and everything under it, best effort (a temporary or trash directory). Not
// std::filesystem::remove_all: libtorch.so of the PyTorch 2.x wheels exports its own copy of it, the
// dynamic linker binds our calls to that copy, and it jumps to a null pointer (a SIGSEGV whenever
// a context was replaced, on the GPU build). nftw is plain libc.
void RemoveTree(const fs::path& path) {
  const auto remove_entry = [](const char* entry, const struct stat*, int, struct FTW*) {
    ::remove(entry);  // files, then their (now empty) directories: FTW_DEPTH visits children first
    return 0;         // go on past an entry that cannot be removed
  };
  nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

constexpr char kTempPrefix[] = ".tmp-";
constexpr char kTrashPrefix[] = ".trash-";

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  return absl::StrCat(getpid(), "-", counter.fetch_add(1), "-", rd());
}

// An I/O failure of the store as a status without paths (messages reach clients): RESOURCE_EXHAUSTED
// when the disk, a disk quota or the file size limit has no room, INTERNAL otherwise.
absl::Status IoError(int error, const std::string& what) {
  const std::string text = std::generic_category().message(error);
  if (error == ENOSPC || error == EDQUOT || error == EFBIG) {
    return absl::ResourceExhaustedError(absl::StrCat("the context store is out of space (", text, ") while ", what));
  }
  return absl::InternalError(absl::StrCat("the context store failed (", text, ") while ", what));
}

absl::Status FsyncPath(const fs::path& path, bool directory) {
  int fd = open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return IoError(errno, "syncing a file");
  int rc = fsync(fd);
  const int error = errno;
  close(fd);
  if (rc != 0) return IoError(error, "syncing a file");
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.filename().string()));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::StatusOr<std::string> FileSha256(const fs::path& path) { return Sha256FileHex(path.string()); }

absl::Status WriteFile(const fs::path& path, const std::string& bytes) {
  std::FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) return IoError(errno, "writing the manifest");
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size() && std::fflush(out) == 0;
  int error = ok ? 0 : errno;
  if (std::fclose(out) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (!ok) return IoError(error, "writing the manifest");
  return absl::OkStatus();
}

std::string UniqueGeneration() {
  std::random_device rd;
  return absl::StrCat(std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count(),
                      "-", rd(), "-", rd(), "-", UniqueSuffix());
}

// Reads <dir>/manifest.json and checks it against manifest.sha256, the id and the namespace.
absl::StatusOr<nlohmann::json> ReadVerifiedManifestUnguarded(const fs::path& dir, const std::string& id,
                                                             const std::string& store_dir) {
  auto text = ReadWholeFile(dir / kManifest);
  if (!text.ok()) return absl::DataLossError(absl::StrCat("context '", id, "': manifest.json is missing"));
  nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  auto checksum = ReadWholeFile(dir / kManifestChecksum);
  if (!checksum.ok()) {
    // Written before manifests had a checksum: refuse it as an old format, not as damage.
    if (manifest.is_object() && manifest.value("format_version", 0) < kContextFormatVersion &&
        manifest.value("format", "") == "squeezeserve-context") {
      return absl::FailedPreconditionError(absl::StrCat("context '", id, "' has format version ",
                                                        manifest.value("format_version", 0), "; this server reads ",
                                                        kContextFormatVersion, ": ingest it again"));
    }
    return absl::DataLossError(absl::StrCat("context '", id, "': manifest.sha256 is missing"));
  }
  if (std::string(absl::StripAsciiWhitespace(*checksum)) != Sha256Hex(*text)) {
    return absl::DataLossError(absl::StrCat("context '", id, "': manifest checksum mismatch"));
  }
  if (manifest.is_discarded() || !manifest.is_object() || manifest.value("format", "") != "squeezeserve-context") {
    return absl::DataLossError(absl::StrCat("context '", id, "': manifest.json is corrupt"));
  }
  if (manifest.value("context_id", "") != id || manifest.value("namespace", "") != NamespaceOfStoreDir(store_dir)) {
    return absl::DataLossError(absl::StrCat("context '", id,
                                            "': the manifest names another context (a copied directory?)"));
  }
  return manifest;
}

// A manifest field of the wrong JSON type makes nlohmann::json throw: that is damage, not a crash.
template <typename Fn>
auto GuardJson(const std::string& id, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const nlohmann::json::exception&) {
    return absl::DataLossError(absl::StrCat("context '", id, "': the manifest has a field of the wrong type"));
  }
}

absl::StatusOr<nlohmann::json> ReadVerifiedManifest(const fs::path& dir, const std::string& id,
                                                    const std::string& store_dir) {
  return GuardJson(id, [&] { return ReadVerifiedManifestUnguarded(dir, id, store_dir); });
}

}  // namespace

std::string NamespaceOfStoreDir(const std::string& store_dir) {
  std::string name = fs::path(store_dir).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(store_dir).lexically_normal().parent_path().filename().string();
  return absl::StartsWith(name, "@") ? name.substr(1) : "";
}

absl::Status CheckStoreSpace(const std::string& store_dir, uint64_t bytes, const std::string& what) {
  fs::path at(store_dir);
  std::error_code ec;
  while (!at.empty() && !fs::exists(at, ec)) at = at.parent_path();  // the store may not exist yet
  if (at.empty()) at = ".";
  const fs::space_info space = fs::space(at, ec);
  if (ec || space.available >= bytes) return absl::OkStatus();
  const auto gb = [](uint64_t b) { return absl::StrFormat("%.1f GB", static_cast<double>(b) / 1e9); };
  return absl::ResourceExhaustedError(absl::StrCat("the context store has ", gb(space.available), " free; ", what,
                                                   " needs ", gb(bytes), ": delete contexts or enlarge the store"));
}

absl::Status PublishContextDir(const std::string& store_dir, const std::string& id, nlohmann::json manifest,
                               const std::vector<TensorToWrite>& tensors, const WriteProgressFn& progress) {
  if (!IsValidContextId(id)) return absl::InvalidArgumentError(absl::StrCat("invalid context id '", id, "'"));
  if (!manifest.contains("model_fingerprint")) return absl::InternalError("manifest lacks model_fingerprint");
  uint64_t bytes = 0;
  for (const TensorToWrite& t : tensors) {
    uint64_t n = DTypeSize(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
    bytes += n;
  }
  if (absl::Status room = CheckStoreSpace(store_dir, bytes, absl::StrCat("context '", id, "'")); !room.ok()) {
    return room;
  }
  std::error_code ec;
  fs::create_directories(store_dir, ec);
  if (ec) return IoError(ec.value(), "creating the store directory");

  const fs::path store(store_dir);
  const fs::path temp = store / absl::StrCat(kTempPrefix, id, "-", UniqueSuffix());
  fs::create_directory(temp, ec);
  if (ec) return IoError(ec.value(), absl::StrCat("creating a directory for context '", id, "'"));
  auto fail = [&](absl::Status status) {
    RemoveTree(temp);
    return status;
  };

  std::string digest;  // of the bytes written, hashed while writing: no second pass over a many-GB file
  if (auto s = WriteSafetensors((temp / kTensors).string(), tensors, {}, &digest, progress); !s.ok()) {
    // The writer's message names the file; keep only the kind of failure.
    return fail(absl::IsResourceExhausted(s)
                    ? absl::ResourceExhaustedError(absl::StrCat("the context store is out of space while writing "
                                                                "context '", id, "'"))
                    : absl::InternalError(absl::StrCat("the context store failed while writing context '", id, "'")));
  }
  manifest["format"] = "squeezeserve-context";
  manifest["format_version"] = kContextFormatVersion;
  manifest["context_id"] = id;
  manifest["namespace"] = NamespaceOfStoreDir(store_dir);
  manifest["generation"] = UniqueGeneration();
  manifest["files"] = {{kTensors, {{"sha256", digest}, {"bytes", fs::file_size(temp / kTensors, ec)}}}};
  const std::string manifest_text = manifest.dump(2);
  if (auto s = WriteFile(temp / kManifest, manifest_text); !s.ok()) return fail(s);
  if (auto s = WriteFile(temp / kManifestChecksum, Sha256Hex(manifest_text) + "\n"); !s.ok()) return fail(s);
  for (const char* name : {kTensors, kManifest, kManifestChecksum}) {
    if (auto s = FsyncPath(temp / name, false); !s.ok()) return fail(s);
  }
  if (auto s = FsyncPath(temp, true); !s.ok()) return fail(s);

  // rename() cannot replace a non-empty directory, and moving the old version aside first would
  // leave a moment (and, after a crash, a state) with no context at all. RENAME_EXCHANGE swaps the
  // two directories atomically; the old version then sits under the temporary name and is deleted.
  const fs::path final_dir = store / id;
  const bool replacing = fs::exists(final_dir);
  if (replacing) {
    if (renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      return fail(IoError(errno, absl::StrCat("replacing context '", id, "'")));
    }
    RemoveTree(temp);
  } else {
    fs::rename(temp, final_dir, ec);
    if (ec) return fail(IoError(ec.value(), absl::StrCat("publishing context '", id, "'")));
  }
  return FsyncPath(store, true);
}

namespace {
absl::StatusOr<ContextDir> OpenContextDirUnguarded(const std::string& store_dir, const std::string& id,
                                                   const std::string& model_fingerprint) {
  if (!IsValidContextId(id)) return absl::InvalidArgumentError(absl::StrCat("invalid context id '", id, "'"));
  const fs::path dir = fs::path(store_dir) / id;
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat("context '", id, "' is not in the store"));
  ContextDir out;
  absl::StatusOr<nlohmann::json> manifest = ReadVerifiedManifest(dir, id, store_dir);
  if (!manifest.ok()) return manifest.status();
  out.manifest = *std::move(manifest);
  const auto& m = out.manifest;
  if (m.value("format_version", 0) != kContextFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat("context '", id, "' has format version ",
                                                      m.value("format_version", 0), "; this server reads ",
                                                      kContextFormatVersion, ": ingest it again"));
  }
  if (m.value("model_fingerprint", "") != model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat("context '", id, "' was built for model ",
                                                      m.value("model_fingerprint", "?"), ", not the loaded model ",
                                                      model_fingerprint));
  }
  const auto files = m.find("files");
  if (files == m.end() || !files->is_object() || !files->contains(kTensors) || !(*files)[kTensors].is_object()) {
    return absl::DataLossError(absl::StrCat("context '", id, "': manifest lists no tensors"));
  }
  const auto& entry = (*files)[kTensors];
  std::error_code ec;
  const auto size = fs::file_size(dir / kTensors, ec);
  if (ec || size != entry.value("bytes", uint64_t{0})) {
    return absl::DataLossError(absl::StrCat("context '", id, "': tensors file is missing or truncated"));
  }
  auto digest = FileSha256(dir / kTensors);
  if (!digest.ok() || *digest != entry.value("sha256", "")) {
    return absl::DataLossError(absl::StrCat("context '", id, "': tensors checksum mismatch"));
  }
  auto tensors = SafetensorsFile::Open((dir / kTensors).string());
  if (!tensors.ok()) return absl::DataLossError(absl::StrCat("context '", id, "': the tensors file does not parse"));
  out.tensors = std::move(*tensors);
  return out;
}
}  // namespace

absl::StatusOr<ContextDir> OpenContextDir(const std::string& store_dir, const std::string& id,
                                          const std::string& model_fingerprint) {
  return GuardJson(id, [&] { return OpenContextDirUnguarded(store_dir, id, model_fingerprint); });
}

absl::StatusOr<nlohmann::json> ReadContextManifest(const std::string& store_dir, const std::string& id) {
  if (!IsValidContextId(id)) return absl::InvalidArgumentError(absl::StrCat("invalid context id '", id, "'"));
  const fs::path dir = fs::path(store_dir) / id;
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat("context '", id, "' is not in the store"));
  return ReadVerifiedManifest(dir, id, store_dir);
}

absl::StatusOr<std::string> ReadContextGeneration(const std::string& store_dir, const std::string& id) {
  if (!IsValidContextId(id)) return absl::InvalidArgumentError(absl::StrCat("invalid context id '", id, "'"));
  auto checksum = ReadWholeFile(fs::path(store_dir) / id / kManifestChecksum);
  if (!checksum.ok()) return absl::NotFoundError(absl::StrCat("context '", id, "' is not in the store"));
  return std::string(absl::StripAsciiWhitespace(*checksum));
}

std::vector<std::string> ListContextDirs(const std::string& store_dir) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(store_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && IsValidContextId(name)) ids.push_back(name);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::Status RemoveContextDir(const std::string& store_dir, const std::string& id) {
  if (!IsValidContextId(id)) return absl::InvalidArgumentError(absl::StrCat("invalid context id '", id, "'"));
  const fs::path store(store_dir);
  const fs::path dir = store / id;
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat("context '", id, "' is not in the store"));
  std::error_code ec;
  const fs::path trash = store / absl::StrCat(kTrashPrefix, id, "-", UniqueSuffix());
  fs::rename(dir, trash, ec);
  if (ec) return IoError(ec.value(), absl::StrCat("removing context '", id, "'"));
  RemoveTree(trash);
  return FsyncPath(store, true);
}

int RemoveStaleTemporaries(const std::string& store_dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(store_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, kTempPrefix) || absl::StartsWith(name, kTrashPrefix)) {
      RemoveTree(entry.path());
      ++removed;
    }
  }
  return removed;
}

}  // namespace squeezeserve
