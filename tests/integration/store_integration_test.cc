// The persistent context store through the real binaries: contexts survive a restart, deletes stick,
// a store written for another model is refused (FAILED_PRECONDITION), a corrupted one reports
// DATA_LOSS, and a server killed mid-ingest never leaves a half-written context visible.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/integration/subprocess.h"

namespace squeezeserve::testing {
namespace {

namespace fs = std::filesystem;

// squeezectl exits 10 + the gRPC status code.
constexpr int kExitNotFound = 10 + 5;
constexpr int kExitFailedPrecondition = 10 + 9;
constexpr int kExitDataLoss = 10 + 15;

class StoreIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = fs::temp_directory_path() /
             absl::StrCat("squeezeserve-store-it-", getpid(), "-",
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(store_);
  }
  void TearDown() override {
    if (server_) server_->Stop(30);
    fs::remove_all(store_);
  }

  // (Re)starts the server on the store with `model`.
  void StartServer(const std::string& model = REFERENCE_MODEL_DIR,
                   const std::vector<std::string>& extra = {}) {
    if (server_) EXPECT_EQ(server_->Stop(30), 0);
    server_ = std::make_unique<ServerProcess>();
    std::vector<std::string> argv = {SQUEEZESERVE_BIN, "--model", model, "--listen", "127.0.0.1:0",
                                     "--store", store_.string(), "--threads", "1", "--log_level=warn"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::optional<std::string> address = server_->Start(argv, 60);
    ASSERT_TRUE(address.has_value());
    address_ = *address;
    // The model loads after the listening line; info answers once it has.
    for (int i = 0; i < 300 && Ctl({"info"}).exit_code != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  CommandResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {SQUEEZECTL_BIN, "--server", address_, "--timeout", "120"});
    return RunCommand(args);
  }

  static std::string TokenList(int n) {
    std::vector<int> ids;
    for (int i = 0; i < n; ++i) ids.push_back(3 + (i * 37 + 11) % 997);
    return absl::StrJoin(ids, ",");
  }

  // Greedy continuation of a fixed query on `context`, as JSON; exit code in `code`.
  nlohmann::json Generate(const std::string& context, int* code) {
    CommandResult r = Ctl({"generate", "--json", "--context", context, "--tokens", "5,6,7,8", "--max_new_tokens",
                           "12", "--ignore_eos", "--logprobs"});
    *code = r.exit_code;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
  }

  fs::path store_;
  std::string address_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(StoreIntegrationTest, ContextsSurviveARestartAndDeletesStick) {
  StartServer();
  CommandResult ingest = Ctl({"ingest", "--id", "manual", "--tokens", TokenList(600)});
  ASSERT_EQ(ingest.exit_code, 0) << ingest.err;
  int code = -1;
  nlohmann::json before = Generate("manual", &code);
  ASSERT_EQ(code, 0);
  EXPECT_TRUE(fs::exists(store_ / "manual" / "manifest.json"));

  StartServer();  // a fresh process: nothing in memory
  CommandResult list = Ctl({"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("manual"), std::string::npos) << list.out;
  nlohmann::json after = Generate("manual", &code);
  ASSERT_EQ(code, 0);
  EXPECT_EQ(after["token_ids"], before["token_ids"]);
  EXPECT_EQ(after["usage"]["cached_tokens"], before["usage"]["cached_tokens"]);

  ASSERT_EQ(Ctl({"delete", "--context", "manual"}).exit_code, 0);
  StartServer();
  EXPECT_EQ(Ctl({"get", "--context", "manual"}).exit_code, kExitNotFound);
  EXPECT_FALSE(fs::exists(store_ / "manual"));
}

TEST_F(StoreIntegrationTest, AnotherModelIsRefusedAndCorruptionIsDataLoss) {
  StartServer();
  ASSERT_EQ(Ctl({"ingest", "--id", "doc", "--tokens", TokenList(300)}).exit_code, 0);
  ASSERT_EQ(Ctl({"ingest", "--id", "doc2", "--tokens", TokenList(200)}).exit_code, 0);

  StartServer(OTHER_MODEL_DIR);
  int code = -1;
  Generate("doc", &code);
  EXPECT_EQ(code, kExitFailedPrecondition);

  StartServer();
  const fs::path tensors = store_ / "doc2" / "tensors.safetensors";
  ASSERT_TRUE(fs::exists(tensors));
  {
    std::fstream f(tensors, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(tensors) / 2));
    f.put('\x7f');
  }
  Generate("doc2", &code);
  EXPECT_EQ(code, kExitDataLoss);
  Generate("doc", &code);  // the intact neighbour still serves
  EXPECT_EQ(code, 0);
}

// kill -9 at several points of an ingest: after a restart every listed context verifies and loads,
// and nothing half-written is visible.
TEST_F(StoreIntegrationTest, KilledDuringIngestLeavesNothingHalfWritten) {
  const std::string tokens = TokenList(3000);
  int complete = 0;
  for (int delay_ms : {100, 400, 900, 1600, 2500}) {
    StartServer(REFERENCE_MODEL_DIR, {"--prefill_chunk", "32"});
    const std::string id = absl::StrCat("big-", delay_ms);
    std::thread ingest([&] { Ctl({"ingest", "--id", id, "--tokens", tokens}); });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    server_->Kill();
    server_.reset();
    ingest.join();
    StartServer();
    CommandResult list = Ctl({"list", "--json"});
    ASSERT_EQ(list.exit_code, 0) << list.err;
    for (const auto& entry : fs::directory_iterator(store_)) {
      const std::string name = entry.path().filename().string();
      EXPECT_NE(name[0], '.') << "a temporary survived the restart: " << name;
      int code = -1;
      Generate(name, &code);
      EXPECT_EQ(code, 0) << "context " << name << " is visible but does not load";
      if (name == id) ++complete;
    }
  }
  // Not asserted (it depends on the machine's speed), but logged: how many kills came after publication.
  std::cout << complete << " of 5 kills landed after the context was published\n";
}

}  // namespace
}  // namespace squeezeserve::testing
