#include "base/progress_line.h"

#include <algorithm>
#include <cmath>

namespace pgderive {

std::string GroupDigits(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string FormatDuration(double seconds) {
  const auto s = static_cast<uint64_t>(std::max(0.0, std::round(seconds)));
  char text[32];
  if (s < 60) {
    std::snprintf(text, sizeof text, "%llus", static_cast<unsigned long long>(s));
  } else if (s < 3600) {
    std::snprintf(text, sizeof text, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  } else {
    std::snprintf(text, sizeof text, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s % 3600 / 60));
  }
  return text;
}

std::string FormatProgress(const ProgressSample& sample, double rate) {
  if (!sample.note.empty() && sample.rows == 0) return sample.note;
  std::string out = GroupDigits(sample.rows);
  if (sample.estimated > 0) {
    const double percent =
        std::min(100.0, 100.0 * static_cast<double>(sample.rows) / sample.estimated);
    char pct[32];
    std::snprintf(pct, sizeof pct, " (%.1f%%)", percent);
    out += " of ~" + GroupDigits(std::max(sample.estimated, sample.rows)) + " rows" + pct;
  } else {
    out += " rows";
  }
  if (rate >= 0) {
    out += ", " + GroupDigits(static_cast<uint64_t>(std::llround(rate))) + " rows/s";
    if (sample.estimated > sample.rows && rate > 0) {
      out += ", about " +
             FormatDuration(static_cast<double>(sample.estimated - sample.rows) / rate) + " left";
    }
  }
  if (!sample.note.empty()) out += " (" + sample.note + ")";
  return out;
}

ProgressLine::ProgressLine(std::FILE* out, bool terminal, std::string what,
                           std::chrono::milliseconds plain_interval,
                           std::chrono::milliseconds terminal_interval)
    : out_(out),
      terminal_(terminal),
      what_(std::move(what)),
      plain_interval_(plain_interval),
      terminal_interval_(terminal_interval),
      started_(Clock::now()) {}

double ProgressLine::rate(Clock::time_point now) const {
  if (!first_) return -1;
  const double seconds = std::chrono::duration<double>(now - first_->first).count();
  if (seconds < 0.5 || last_.rows < first_->second) return -1;
  return static_cast<double>(last_.rows - first_->second) / seconds;
}

void ProgressLine::Update(const ProgressSample& sample, Clock::time_point now) {
  if (!first_ || sample.rows < first_->second) first_.emplace(now, sample.rows);
  last_ = sample;
  const auto interval = terminal_ ? terminal_interval_ : plain_interval_;
  if (last_printed_ && now - *last_printed_ < interval) return;
  last_printed_ = now;
  Print(what_ + ": " + FormatProgress(sample, rate(now)));
}

void ProgressLine::Print(const std::string& text) {
  if (!terminal_) {
    std::fprintf(out_, "%s\n", text.c_str());
  } else {
    // Blank what a longer line before left on the terminal.
    const std::string pad(last_width_ > text.size() ? last_width_ - text.size() : 0, ' ');
    std::fprintf(out_, "\r%s%s", text.c_str(), pad.c_str());
    last_width_ = text.size();
  }
  std::fflush(out_);
}

void ProgressLine::Finish(const std::string& summary, Clock::time_point now) {
  if (terminal_ && last_width_ > 0) std::fputc('\n', out_);
  last_width_ = 0;
  const double seconds = std::chrono::duration<double>(now - started_).count();
  char elapsed[32];
  std::snprintf(elapsed, sizeof elapsed, "%.1f s", std::max(0.0, seconds));
  std::fprintf(out_, "%s: %s (%s)\n", what_.c_str(), summary.c_str(), elapsed);
  std::fflush(out_);
}

}  // namespace pgderive
