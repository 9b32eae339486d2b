// Turns a stream of generated token ids into a stream of text pieces: emits only text that is
// complete (never half a UTF-8 character or a piece whose decode still changes) and applies stop
// strings (the text is cut before the first stop string; text that could be the start of one is held
// back until it is decided). Plain C++ (no libtorch).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace squeezeserve {

class TextStream {
 public:
  // Decodes a run of ids to text (the tokenizer's Decode).
  using DecodeFn = std::function<std::string(const std::vector<int32_t>& ids)>;

  TextStream(DecodeFn decode, std::vector<std::string> stop_strings);

  struct Delta {
    std::string text;     // newly complete text to show the client
    bool stopped = false;  // a stop string was found: `text` ends right before it; stream is done
  };

  // Adds one generated token.
  Delta Push(int32_t token);
  // The end of the generation (EOS, length): returns whatever was held back.
  std::string Flush();

 private:
  // Moves decoded text into `pending_` once it is complete.
  void DecodeNewText();
  // Emits pending text, cutting at a stop string and holding back a possible stop-string prefix.
  Delta TakeReadyText();

  DecodeFn decode_;
  std::vector<std::string> stop_strings_;
  std::vector<int32_t> ids_;
  // Decode window (as in TGI/vLLM): decoding ids_[prefix_offset_:] and subtracting the decode of
  // ids_[prefix_offset_:read_offset_] gives the new text with correct spacing at piece boundaries.
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
  std::string pending_;  // decoded, not yet emitted
  bool stopped_ = false;
};

// True when `text` ends inside a UTF-8 multi-byte sequence or with U+FFFD (a decoder's placeholder
// for bytes it could not complete yet).
bool EndsWithIncompleteUtf8(const std::string& text);

}  // namespace squeezeserve
