#include "engine/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "engine/context_store.h"
#include "tests/engine/tiny_checkpoint.h"

namespace squeezeserve {
namespace {

TEST(SafetensorsTest, RoundTripsEveryDtypeAndMetadata) {
  const std::string dir = testing::MakeTempDir("safetensors");
  const std::string path = dir + "/t.safetensors";
  std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, 1e-3f, -7.0f};
  std::vector<uint16_t> f16, bf16;
  for (float v : f32) {
    f16.push_back(FloatToHalf(v));
    bf16.push_back(FloatToBFloat16(v));
  }
  std::vector<int32_t> i32 = {1, -2, 3};
  std::vector<int64_t> i64 = {int64_t{1} << 40, -5};
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"a.f32", DType::kF32, {2, 3}, f32.data()},
                                {"b.f16", DType::kF16, {6}, f16.data()},
                                {"c.bf16", DType::kBF16, {3, 2}, bf16.data()},
                                {"d.i32", DType::kI32, {3}, i32.data()},
                                {"e.i64", DType::kI64, {2}, i64.data()},
                                {"f.empty", DType::kF32, {0, 4}, nullptr}},
                               {{"format", "pt"}})
                  .ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->tensors().size(), 6u);
  EXPECT_EQ((*file)->header_bytes().size() % 8, 0u);

  const TensorView* a = (*file)->Find("a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, std::vector<int64_t>({2, 3}));
  std::vector<float> read(6);
  std::memcpy(read.data(), a->data, a->nbytes);
  EXPECT_EQ(read, f32);

  const TensorView* b = (*file)->Find("b.f16");
  ASSERT_NE(b, nullptr);
  const TensorView* c = (*file)->Find("c.bf16");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->shape, std::vector<int64_t>({3, 2}));
  for (size_t i = 0; i < f32.size(); ++i) {
    uint16_t half_bits, bf16_bits;
    std::memcpy(&half_bits, static_cast<const char*>(b->data) + 2 * i, 2);
    std::memcpy(&bf16_bits, static_cast<const char*>(c->data) + 2 * i, 2);
    EXPECT_NEAR(HalfToFloat(half_bits), f32[i], std::abs(f32[i]) * 1e-3);
    EXPECT_NEAR(BFloat16ToFloat(bf16_bits), f32[i], std::abs(f32[i]) * 1e-2);
  }
  const TensorView* e = (*file)->Find("e.i64");
  ASSERT_NE(e, nullptr);
  int64_t first;
  std::memcpy(&first, e->data, 8);
  EXPECT_EQ(first, int64_t{1} << 40);
  EXPECT_EQ((*file)->Find("f.empty")->nbytes, 0u);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

// The digest hashed while writing (on a second thread) is the file's own: a large tensor, a small one,
// an empty one and metadata, compared with a second read of the file.
TEST(SafetensorsTest, DigestWhileWritingIsTheFilesSha256) {
  const std::string dir = testing::MakeTempDir("safetensors_digest");
  std::vector<uint16_t> big(9'000'003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint16_t>(i * 2654435761u >> 13);
  std::vector<float> small = {1.0f, -2.0f, 3.5f};
  std::string digest;
  ASSERT_TRUE(WriteSafetensors(dir + "/t.safetensors",
                               {{"big", DType::kBF16, {3, 3'000'001}, big.data()},
                                {"none", DType::kF32, {0}, nullptr},
                                {"small", DType::kF32, {3}, small.data()}},
                               {{"k", "v"}}, &digest)
                  .ok());
  auto reread = Sha256FileHex(dir + "/t.safetensors");
  ASSERT_TRUE(reread.ok()) << reread.status();
  EXPECT_EQ(digest.size(), 64u);
  EXPECT_EQ(digest, *reread);
  // A different byte gives a different digest (the hash covers the tensor data, not only the header).
  big[4'500'000] ^= 1;
  std::string other;
  ASSERT_TRUE(WriteSafetensors(dir + "/u.safetensors",
                               {{"big", DType::kBF16, {3, 3'000'001}, big.data()},
                                {"none", DType::kF32, {0}, nullptr},
                                {"small", DType::kF32, {3}, small.data()}},
                               {{"k", "v"}}, &other)
                  .ok());
  EXPECT_NE(other, digest);
  EXPECT_EQ(other, *Sha256FileHex(dir + "/u.safetensors"));
}

// Progress: after every piece of the file (length, header, each tensor's data in steps of at most
// 64 MiB), rising to the file's size.
TEST(SafetensorsTest, ProgressRisesToTheFileSize) {
  const std::string dir = testing::MakeTempDir("safetensors_progress");
  std::vector<uint16_t> big(9'000'003, 7);
  std::vector<float> small = {1.0f, -2.0f, 3.5f};
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  ASSERT_TRUE(WriteSafetensors(dir + "/p.safetensors",
                               {{"big", DType::kBF16, {3, 3'000'001}, big.data()},
                                {"small", DType::kF32, {3}, small.data()}},
                               {}, nullptr, [&](uint64_t written, uint64_t total) { calls.emplace_back(written, total); })
                  .ok());
  ASSERT_EQ(calls.size(), 4u) << "length, header, big, small";
  const uint64_t size = std::filesystem::file_size(dir + "/p.safetensors");
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, size);
    if (i > 0) EXPECT_GT(calls[i].first, calls[i - 1].first);
  }
  EXPECT_EQ(calls.back().first, size);
}

TEST(SafetensorsTest, HalfConversionsAreExactOnRepresentableValues) {
  for (float v : {0.0f, 1.0f, -2.0f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(v)), v) << v;
  }
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(1e6f))));
  for (float v : {0.0f, 1.0f, -3.5f, std::ldexp(1.0f, 100)}) EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(v)), v);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.00390625f)), 1.0f);  // tie rounds to even
}

TEST(SafetensorsTest, ShardedCheckpoint) {
  const std::string dir = testing::MakeTempDir("sharded");
  std::vector<float> x = {1, 2}, y = {3, 4, 5};
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors", {{"x", DType::kF32, {2}, x.data()}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {{"y", DType::kF32, {3}, y.data()}}).ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                                              "y": "model-00002-of-00002.safetensors"}})";
  auto checkpoint = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->files().size(), 2u);
  ASSERT_NE((*checkpoint)->Find("x"), nullptr);
  ASSERT_NE((*checkpoint)->Find("y"), nullptr);
  EXPECT_EQ((*checkpoint)->Find("y")->shape, std::vector<int64_t>({3}));
  float y2;
  std::memcpy(&y2, static_cast<const char*>((*checkpoint)->Find("y")->data) + 8, 4);
  EXPECT_EQ(y2, 5.0f);
}

TEST(SafetensorsTest, RejectsMalformedFiles) {
  const std::string dir = testing::MakeTempDir("bad-safetensors");
  auto write_raw = [&](const std::string& name, const std::string& header, size_t data_bytes) {
    std::ofstream out(dir + "/" + name, std::ios::binary);
    uint64_t size = header.size();
    out.write(reinterpret_cast<const char*>(&size), 8);
    out << header << std::string(data_bytes, '\0');
    return dir + "/" + name;
  };
  EXPECT_FALSE(SafetensorsFile::Open(write_raw("short", "", 0).substr(0, 0) + dir + "/nonexistent").ok());
  EXPECT_FALSE(SafetensorsFile::Open(write_raw("json", "{not json", 0)).ok());
  EXPECT_FALSE(
      SafetensorsFile::Open(write_raw("range", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)).ok());
  EXPECT_FALSE(
      SafetensorsFile::Open(write_raw("size", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16)).ok());
  EXPECT_FALSE(
      SafetensorsFile::Open(write_raw("dtype", R"({"t":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8)).ok());
  {
    std::ofstream out(dir + "/huge", std::ios::binary);
    uint64_t size = uint64_t{1} << 62;
    out.write(reinterpret_cast<const char*>(&size), 8);
  }
  EXPECT_FALSE(SafetensorsFile::Open(dir + "/huge").ok());
  EXPECT_TRUE(
      SafetensorsFile::Open(write_raw("ok", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8)).ok());
  EXPECT_EQ(SafetensorsCheckpoint::Open(dir + "/none").status().code(), absl::StatusCode::kNotFound);
  std::vector<float> x = {1};
  EXPECT_FALSE(WriteSafetensors(dir + "/dup", {{"x", DType::kF32, {1}, x.data()}, {"x", DType::kF32, {1}, x.data()}}).ok());
}

}  // namespace
}  // namespace squeezeserve
