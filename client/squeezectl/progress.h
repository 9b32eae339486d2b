// Ingest progress on stderr: a redrawn bar when stderr is a terminal, otherwise one plain line per
// stage change or 10% step (logs and CI stay readable).
#pragma once

#include <string>

#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezectl {

class ProgressReporter {
 public:
  ProgressReporter();
  void Update(const squeezeserve::v1::IngestContextProgress& progress);
  // Ends the bar's line.
  void Done();

 private:
  bool tty_;
  bool drawn_ = false;
  std::string last_stage_;
  int last_decile_ = -1;
};

}  // namespace squeezectl
