#include "engine/text_stream.h"

#include <algorithm>

namespace squeezeserve {

bool EndsWithIncompleteUtf8(const std::string& text) {
  static const std::string kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
  if (text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacementChar) == 0) return true;
  // Walk back over continuation bytes (10xxxxxx) to the lead byte and check the sequence length.
  size_t continuation = 0;
  size_t i = text.size();
  while (i > 0 && continuation < 4) {
    const auto byte = static_cast<unsigned char>(text[i - 1]);
    if ((byte & 0xC0) != 0x80) {
      size_t expected = 1;
      if ((byte & 0xE0) == 0xC0) expected = 2;
      else if ((byte & 0xF0) == 0xE0) expected = 3;
      else if ((byte & 0xF8) == 0xF0) expected = 4;
      return continuation + 1 < expected;
    }
    ++continuation;
    --i;
  }
  return false;
}

TextStream::TextStream(DecodeFn decode, std::vector<std::string> stop_strings)
    : decode_(std::move(decode)) {
  for (std::string& stop : stop_strings) {
    if (!stop.empty()) stop_strings_.push_back(std::move(stop));
  }
}

void TextStream::DecodeNewText() {
  const std::vector<int32_t> prefix_ids(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  const std::vector<int32_t> window_ids(ids_.begin() + prefix_offset_, ids_.end());
  const std::string prefix_text = decode_(prefix_ids);
  const std::string window_text = decode_(window_ids);
  // Hold back while the newest piece may still change (incomplete character) or adds nothing.
  if (window_text.size() <= prefix_text.size() || EndsWithIncompleteUtf8(window_text)) return;
  if (window_text.compare(0, prefix_text.size(), prefix_text) != 0) return;
  pending_ += window_text.substr(prefix_text.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
}

TextStream::Delta TextStream::TakeReadyText() {
  Delta delta;
  // Earliest stop string wins.
  size_t stop_at = std::string::npos;
  for (const std::string& stop : stop_strings_) stop_at = std::min(stop_at, pending_.find(stop));
  if (stop_at != std::string::npos) {
    delta.text = pending_.substr(0, stop_at);
    delta.stopped = stopped_ = true;
    pending_.clear();
    return delta;
  }
  // Hold back the longest tail of pending_ that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& stop : stop_strings_) {
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  delta.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return delta;
}

TextStream::Delta TextStream::Push(int32_t token) {
  if (stopped_) return Delta{"", true};
  ids_.push_back(token);
  DecodeNewText();
  return TakeReadyText();
}

std::string TextStream::Flush() {
  if (stopped_) return "";
  // Whatever is still undecided becomes final now, placeholder characters included.
  if (read_offset_ < ids_.size()) {
    const std::vector<int32_t> prefix_ids(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
    const std::vector<int32_t> window_ids(ids_.begin() + prefix_offset_, ids_.end());
    const std::string prefix_text = decode_(prefix_ids);
    const std::string window_text = decode_(window_ids);
    if (window_text.size() > prefix_text.size() && window_text.compare(0, prefix_text.size(), prefix_text) == 0) {
      pending_ += window_text.substr(prefix_text.size());
    }
    prefix_offset_ = read_offset_ = ids_.size();
  }
  Delta delta = TakeReadyText();
  if (delta.stopped) return delta.text;
  delta.text += pending_;  // a held-back stop-string prefix that never completed is real output
  pending_.clear();
  return delta.text;
}

}  // namespace squeezeserve
