#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/sha256.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {
namespace {

using nlohmann::json;

// Headers larger than this are refused (the reference implementation's limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", name));
}

std::string ErrnoText() { return std::strerror(errno); }

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto fail = [&path](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", ErrnoText()));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": ", ErrnoText()));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_size_ = static_cast<size_t>(st.st_size);
  if (file->mapping_size_ < 8) {
    ::close(fd);
    return fail("file too small for a safetensors header");
  }
  void* mapping = ::mmap(nullptr, file->mapping_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping stays valid
  if (mapping == MAP_FAILED) return absl::InternalError(absl::StrCat(path, ": mmap: ", ErrnoText()));
  file->mapping_ = mapping;

  const auto* bytes = static_cast<const unsigned char*>(mapping);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];  // little endian
  if (header_size > kMaxHeaderBytes || header_size > file->mapping_size_ - 8) {
    return fail("header length exceeds the file");
  }
  file->header_size_ = header_size;
  json header = json::parse(bytes + 8, bytes + 8 + header_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return fail("header is not a JSON object");

  const unsigned char* data_start = bytes + 8 + header_size;
  const uint64_t data_size = file->mapping_size_ - 8 - header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return fail("__metadata__ must be an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return fail("__metadata__ values must be strings");
        file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    // (An init-capture: clang before 16 cannot capture a structured binding, which the fuzz build needs.)
    auto field_error = [&, tensor = std::string(name)](const char* what) {
      return fail(absl::StrCat("tensor ", tensor, ": ", what));
    };
    if (!entry.is_object()) return field_error("entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return field_error("missing dtype");
    if (shape_it == entry.end() || !shape_it->is_array()) return field_error("missing shape");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return field_error("data_offsets must be [begin, end]");
    }
    auto dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return field_error(dtype.status().message().data());

    TensorView view;
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& d : *shape_it) {
      if (!d.is_number_unsigned()) return field_error("shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim) return field_error("shape overflows");
      numel *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& begin_json = (*offsets_it)[0];
    const json& end_json = (*offsets_it)[1];
    if (!begin_json.is_number_unsigned() || !end_json.is_number_unsigned()) {
      return field_error("data_offsets must be non-negative integers");
    }
    uint64_t begin = begin_json.get<uint64_t>(), end = end_json.get<uint64_t>();
    if (begin > end || end > data_size) return field_error("data_offsets outside the file");
    if (end - begin != numel * DTypeSize(view.dtype)) return field_error("byte size does not match the shape");
    view.data = data_start + begin;
    view.nbytes = end - begin;
    file->tensors_.emplace(name, std::move(view));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::string SafetensorsFile::header_bytes() const {
  return std::string(static_cast<const char*>(mapping_) + 8, header_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto checkpoint = std::make_unique<SafetensorsCheckpoint>();
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::set<std::string> shard_names;
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path);
    std::stringstream text;
    text << in.rdbuf();
    json index = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": missing weight_map"));
    }
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map values must be file names"));
      }
      std::string shard_name = shard.get<std::string>();
      if (shard_name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": shard ", shard_name, " is not a plain file name"));
      }
      shard_names.insert(shard_name);
    }
  } else if (fs::exists(fs::path(dir) / "model.safetensors", ec)) {
    shard_names.insert("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  for (const std::string& shard_name : shard_names) {  // std::set: sorted, stable order
    auto file = SafetensorsFile::Open((fs::path(dir) / shard_name).string());
    if (!file.ok()) return file.status();
    checkpoint->files_.push_back(std::move(*file));
  }
  for (const auto& file : checkpoint->files_) {
    for (const auto& [name, view] : file->tensors()) {
      if (!checkpoint->by_name_.emplace(name, &view).second) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor ", name, " appears in two shards"));
      }
    }
  }
  return checkpoint;
}

const TensorView* SafetensorsCheckpoint::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata, std::string* sha256_hex,
                              const WriteProgressFn& progress) {
  // nlohmann::ordered_json keeps the tensors in the order given, so offsets grow monotonically.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !seen.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor name \"", t.name, "\" is empty, reserved or repeated"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": negative dimension"));
      numel *= static_cast<uint64_t>(d);
    }
    if (numel > 0 && t.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": no data"));
    }
    uint64_t nbytes = numel * DTypeSize(t.dtype);
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  // The file as a list of byte ranges: the length, the header, every tensor's data.
  unsigned char length[8];
  uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header_size >> (8 * i));
  std::vector<std::pair<const char*, uint64_t>> pieces = {{reinterpret_cast<const char*>(length), 8},
                                                          {header_text.data(), header_text.size()}};
  for (const TensorToWrite& t : tensors) {
    uint64_t nbytes = DTypeSize(t.dtype);
    for (int64_t d : t.shape) nbytes *= static_cast<uint64_t>(d);
    if (nbytes > 0) pieces.emplace_back(static_cast<const char*>(t.data), nbytes);
  }

  FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) return absl::InternalError(absl::StrCat(path, ": ", ErrnoText()));
  // The hash reads the same (read-only) bytes as the writes, in the same order, on its own thread.
  std::thread hasher;
  if (sha256_hex != nullptr) {
    hasher = std::thread([&pieces, sha256_hex] {
      Sha256 sha;
      for (const auto& [data, size] : pieces) sha.Update(data, size);
      *sha256_hex = sha.HexDigest();
    });
  }
  uint64_t total = 0, written = 0;
  for (const auto& piece : pieces) total += piece.second;
  constexpr uint64_t kStep = uint64_t{64} << 20;
  bool ok = true;
  for (const auto& [data, size] : pieces) {
    for (uint64_t at = 0; ok && at < size; at += kStep) {
      const uint64_t n = std::min(kStep, size - at);
      ok = std::fwrite(data + at, 1, n, out) == n;
      written += n;
      if (ok && progress) progress(written, total);
    }
  }
  ok = ok && std::fflush(out) == 0 && ::fsync(::fileno(out)) == 0;
  int error = ok ? 0 : errno;
  if (std::fclose(out) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (hasher.joinable()) hasher.join();
  if (!ok) {
    // A full disk (or quota, or file size limit) is the caller's to report as such.
    const std::string message = absl::StrCat(path, ": write failed: ", std::strerror(error));
    if (error == ENOSPC || error == EDQUOT || error == EFBIG) return absl::ResourceExhaustedError(message);
    return absl::InternalError(message);
  }
  return absl::OkStatus();
}

uint16_t FloatToBFloat16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float BFloat16ToFloat(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, 4);
  return value;
}

uint16_t FloatToHalf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const uint32_t abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);  // NaN
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // overflow → inf
  if (abs < 0x38800000) {
    // Subnormal half (or zero): shift the implicit-one mantissa into place, rounding to even.
    if (abs < 0x33000000) return static_cast<uint16_t>(sign);
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - exponent;  // 14 + (112 - exponent) ... bits to drop
    uint32_t half = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t rebased = abs - 0x38000000;  // exponent bias 127 → 15
  uint32_t half = rebased >> 13;
  const uint32_t remainder = rebased & 0x1fff;
  if (remainder > 0x1000 || (remainder == 0x1000 && (half & 1))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exponent = 113;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

}  // namespace squeezeserve
