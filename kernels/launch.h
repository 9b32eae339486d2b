// How the decode step's kernels are launched: with programmatic dependent launch (PDL, sm_90+).
// Plain C++ header. A decode step at batch 1 is a chain of small kernels per layer (append the new
// token's K/V, score the centroids, threshold and compact them, per level, then attend, then advance
// read-ahead), each a few microseconds long, so the gap between one kernel's end and the next one's
// start is a large share of the step. With PDL a kernel of the chain is launched while its
// predecessor still runs, does what does not depend on it (its launch, reading the fixed index
// data), and waits on the device (griddepcontrol.wait) before it reads what the predecessor wrote
// or writes anything. Results are the same with it on or off, bit for bit.
#pragma once

namespace squeezeserve::kernels {

// Process-wide switch, on by default; it takes effect only where the device is sm_90 or newer
// (elsewhere every launch is an ordinary one). Off: for A/B measurements (kernels_bench).
void set_programmatic_launch(bool on);
bool programmatic_launch_enabled();

}  // namespace squeezeserve::kernels
