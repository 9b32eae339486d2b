// The on-disk context store: atomic publication, verification on load, crash safety.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "engine/context_files.h"
#include "gtest/gtest.h"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("squeezeserve-store-test-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Publishes `floats` random values as one tensor under `id`.
  absl::Status Publish(const std::string& id, size_t floats, const std::string& fingerprint = "model-a") {
    data_.resize(floats);
    std::mt19937 rng(7);
    std::normal_distribution<float> dist;
    for (float& v : data_) v = dist(rng);
    nlohmann::json manifest = {{"model_fingerprint", fingerprint}, {"num_tokens", floats}};
    return PublishContextDir(dir_.string(), id, manifest,
                             {{"layer.0.keys", DType::kF32, {static_cast<int64_t>(floats)}, data_.data()}});
  }

  fs::path dir_;
  std::vector<float> data_;
};

TEST_F(StoreTest, RoundTripVerifiesAndReturnsTheTensors) {
  ASSERT_TRUE(Publish("doc-1", 1000).ok());
  auto loaded = OpenContextDir(dir_.string(), "doc-1", "model-a");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->manifest["num_tokens"], 1000);
  const TensorView* keys = loaded->tensors->Find("layer.0.keys");
  ASSERT_NE(keys, nullptr);
  ASSERT_EQ(keys->nbytes, 1000 * sizeof(float));
  EXPECT_EQ(std::memcmp(keys->data, data_.data(), keys->nbytes), 0);
  EXPECT_EQ(ListContextDirs(dir_.string()), std::vector<std::string>{"doc-1"});
}

TEST_F(StoreTest, UnknownIdIsNotFound) {
  fs::create_directories(dir_);
  EXPECT_EQ(OpenContextDir(dir_.string(), "nope", "model-a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RemoveContextDir(dir_.string(), "nope").code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, AnotherModelIsFailedPrecondition) {
  ASSERT_TRUE(Publish("doc", 10, "model-a").ok());
  auto loaded = OpenContextDir(dir_.string(), "doc", "model-b");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(loaded.status().message().find("model-a"), std::string::npos);
}

TEST_F(StoreTest, FlippedByteIsDataLoss) {
  ASSERT_TRUE(Publish("doc", 1000).ok());
  const fs::path tensors = dir_ / "doc" / "tensors.safetensors";
  std::fstream f(tensors, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(fs::file_size(tensors) - 10));
  f.put('\x5a');
  f.close();
  EXPECT_EQ(OpenContextDir(dir_.string(), "doc", "model-a").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(StoreTest, TruncatedFileAndCorruptManifestAreDataLoss) {
  ASSERT_TRUE(Publish("a", 1000).ok());
  fs::resize_file(dir_ / "a" / "tensors.safetensors", 100);
  EXPECT_EQ(OpenContextDir(dir_.string(), "a", "model-a").status().code(), absl::StatusCode::kDataLoss);

  ASSERT_TRUE(Publish("b", 10).ok());
  std::ofstream(dir_ / "b" / "manifest.json") << "{not json";
  EXPECT_EQ(OpenContextDir(dir_.string(), "b", "model-a").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(StoreTest, RepublishReplacesAndRemoveDeletes) {
  ASSERT_TRUE(Publish("doc", 10).ok());
  ASSERT_TRUE(Publish("doc", 20).ok());
  auto loaded = OpenContextDir(dir_.string(), "doc", "model-a");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->manifest["num_tokens"], 20);
  ASSERT_TRUE(RemoveContextDir(dir_.string(), "doc").ok());
  EXPECT_TRUE(ListContextDirs(dir_.string()).empty());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}

TEST_F(StoreTest, InvalidIdsAreRefused) {
  EXPECT_EQ(Publish("../escape", 10).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Publish(".hidden", 10).code(), absl::StatusCode::kInvalidArgument);
}

// A process killed at any moment of a publication leaves either no context or a complete one.
TEST_F(StoreTest, KillDuringPublishNeverLeavesAHalfWrittenContext) {
  for (int round = 0; round < 6; ++round) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // 64 MB of tensors: long enough to be caught mid-write.
      for (int i = 0;; ++i) (void)Publish("big", 16 << 20);
      _exit(0);
    }
    usleep(50000 + round * 70000);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    for (const std::string& id : ListContextDirs(dir_.string())) {
      auto loaded = OpenContextDir(dir_.string(), id, "model-a");
      EXPECT_TRUE(loaded.ok()) << "round " << round << ": " << loaded.status();
    }
    RemoveStaleTemporaries(dir_.string());
    for (const auto& entry : fs::directory_iterator(dir_)) {
      EXPECT_EQ(entry.path().filename().string(), "big") << "stale entry after cleanup";
    }
  }
}

}  // namespace
}  // namespace squeezeserve
