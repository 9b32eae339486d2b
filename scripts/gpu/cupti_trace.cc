// A CUPTI injection library: the kernels, copies and CUDA runtime calls of a process's profiled
// steps as they ran, for scripts/gpu/step_timeline.py. Why: the GPU machine has no Nsight Systems,
// and Nsight Compute times each kernel alone (scripts/gpu/decode_graph_profile.py), which says what a
// kernel costs but not what the step pays for it: under programmatic dependent launch the kernels
// overlap, and between two replays of a decode graph the GPU waits for the host.
//
// The CUDA driver loads the library named by CUDA_INJECTION64_PATH at cuInit and calls
// InitializeInjection. The records kept lie in the window from the process's first
// cudaProfilerStart (the server calls it around the steps named by SQUEEZESERVE_PROFILE_RANGE:
// engine/decode_graphs.cc StepRange) to its SQZ_TRACE_WINDOWS-th cudaProfilerStop (default 2: two
// replays and the host's work between them). The GPU's kinds are traced from the start, since a
// graph instantiated before the window must already be traced node by node; the runtime calls only
// in the window. At exit the records go to SQZ_TRACE_OUT.<pid>.csv (default /tmp/sqz_trace), one
// line each: kind (kernel, memcpy, memset, api), start ns, end ns, stream (api: thread), graph node
// (0: none), name. A process whose window never opened writes nothing.
//   g++ -std=c++17 -O2 -shared -fPIC -I$CUDA/include cupti_trace.cc -L$CUPTI_LIB -lcupti -o libsqz_cupti_trace.so
// (scripts/gpu/profile_decode_graph.sh --timeline builds and uses it.)
#include <cupti.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Record {
  const char* kind;
  uint64_t start, end;
  uint64_t stream;
  uint64_t graph_node;
  std::string name;
};

std::mutex g_mutex;
std::vector<Record> g_records;
std::atomic<int> g_stops{0};
// The window, CUPTI timestamps (ns): 0 = not opened yet; the end UINT64_MAX until it closes.
std::atomic<uint64_t> g_window_start{0};
std::atomic<uint64_t> g_window_end{UINT64_MAX};
int g_windows = 2;

constexpr CUpti_ActivityKind kGpuKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                            CUPTI_ACTIVITY_KIND_MEMSET};

// Whether work that ran over [start, end] touches the window. A record completed before the window
// opened ended before it (its buffer was handed over earlier), so 0 drops it.
bool InWindow(uint64_t start, uint64_t end) {
  const uint64_t from = g_window_start.load();
  return from != 0 && end >= from && start <= g_window_end.load();
}

void Check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  std::fprintf(stderr, "cupti_trace: %s: %s\n", what, text ? text : "unknown error");
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kBytes = 8 << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBytes));
  *size = *buffer != nullptr ? kBytes : 0;
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::vector<Record> got;
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    const size_t before = got.size();
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        got.push_back({"kernel", k->start, k->end, k->streamId, k->graphNodeId, k->name ? k->name : "?"});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        got.push_back({"memcpy", m->start, m->end, m->streamId, m->graphNodeId,
                       "memcpy kind " + std::to_string(m->copyKind) + " " + std::to_string(m->bytes) + " B"});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        got.push_back({"memset", m->start, m->end, m->streamId, m->graphNodeId,
                       "memset " + std::to_string(m->bytes) + " B"});
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME: {
        const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(record);
        const char* name = nullptr;
        cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name);
        got.push_back({"api", a->start, a->end, a->threadId, 0, name ? name : "?"});
        break;
      }
      default:
        break;
    }
    if (got.size() > before && !InWindow(got.back().start, got.back().end)) got.pop_back();
  }
  std::free(buffer);
  const std::lock_guard<std::mutex> lock(g_mutex);
  for (Record& r : got) g_records.push_back(std::move(r));
}

// The window: opened at the first cudaProfilerStart, closed at the g_windows-th cudaProfilerStop.
void CUPTIAPI OnRuntimeCall(void*, CUpti_CallbackDomain, CUpti_CallbackId cbid, const void* data) {
  const auto* info = static_cast<const CUpti_CallbackData*>(data);
  uint64_t now = 0;
  if (cbid == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000 && info->callbackSite == CUPTI_API_EXIT &&
      g_window_start.load() == 0) {
    Check(cuptiGetTimestamp(&now), "reading the clock");
    g_window_start = now;
    Check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME), "enabling the runtime calls");
  } else if (cbid == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000 && info->callbackSite == CUPTI_API_EXIT &&
             g_window_start.load() != 0 && ++g_stops == g_windows) {
    Check(cuptiGetTimestamp(&now), "reading the clock");
    g_window_end = now;
    Check(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_RUNTIME), "disabling the runtime calls");
  }
}

void WriteRecords() {
  if (g_window_start.load() == 0) return;
  Check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "flushing");
  const char* prefix = std::getenv("SQZ_TRACE_OUT");
  const std::string path = std::string(prefix ? prefix : "/tmp/sqz_trace") + "." + std::to_string(getpid()) + ".csv";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "cupti_trace: cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "kind,start_ns,end_ns,stream,graph_node,name\n");
  const std::lock_guard<std::mutex> lock(g_mutex);
  for (const Record& r : g_records) {
    std::string name = r.name;  // quoted, quotes doubled (CSV)
    for (size_t at = name.find('"'); at != std::string::npos; at = name.find('"', at + 2)) name.insert(at, "\"");
    std::fprintf(f, "%s,%llu,%llu,%llu,%llu,\"%s\"\n", r.kind, static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), static_cast<unsigned long long>(r.stream),
                 static_cast<unsigned long long>(r.graph_node), name.c_str());
  }
  std::fclose(f);
  std::fprintf(stderr, "cupti_trace: %zu records in %s\n", g_records.size(), path.c_str());
}

}  // namespace

extern "C" int InitializeInjection(void) {
  if (const char* w = std::getenv("SQZ_TRACE_WINDOWS")) g_windows = std::max(1, std::atoi(w));
  Check(cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted), "registering the buffers");
  for (CUpti_ActivityKind kind : kGpuKinds) Check(cuptiActivityEnable(kind), "enabling an activity kind");
  CUpti_SubscriberHandle subscriber;
  Check(cuptiSubscribe(&subscriber, reinterpret_cast<CUpti_CallbackFunc>(OnRuntimeCall), nullptr), "subscribing");
  Check(cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000),
        "the cudaProfilerStart callback");
  Check(cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000),
        "the cudaProfilerStop callback");
  std::atexit(WriteRecords);
  return 1;
}
