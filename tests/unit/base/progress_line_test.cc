// The progress line of the commands that wait on a fill: numbers, rate, time left;
// in place on a terminal, plain lines at an interval otherwise.
#include "base/progress_line.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace pgderive {
namespace {

using namespace std::chrono_literals;

// What `fill` writes into a memory stream.
template <typename F>
std::string Captured(F fill) {
  char* buffer = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&buffer, &size);
  fill(out);
  std::fclose(out);
  std::string text(buffer, size);
  std::free(buffer);
  return text;
}

TEST(ProgressLineTest, Formats) {
  EXPECT_EQ(GroupDigits(0), "0");
  EXPECT_EQ(GroupDigits(999), "999");
  EXPECT_EQ(GroupDigits(1234567), "1,234,567");
  EXPECT_EQ(FormatDuration(42), "42s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(7620), "2h07m");
  EXPECT_EQ(FormatProgress({.rows = 120000, .estimated = 1000000, .note = ""}, 8400),
            "120,000 of ~1,000,000 rows (12.0%), 8,400 rows/s, about 1m45s left");
  EXPECT_EQ(FormatProgress({.rows = 5, .estimated = 0, .note = ""}, -1), "5 rows");
  EXPECT_EQ(FormatProgress({.rows = 0, .estimated = 10, .note = "waiting"}, -1), "waiting");
}

TEST(ProgressLineTest, PlainLinesAtTheIntervalThenTheSummary) {
  const auto t0 = ProgressLine::Clock::now();
  const std::string text = Captured([&](std::FILE* out) {
    ProgressLine line(out, /*terminal=*/false, "view v", 5s);
    line.Update({.rows = 0, .estimated = 1000, .note = ""}, t0);
    line.Update({.rows = 100, .estimated = 1000, .note = ""}, t0 + 1s);  // within 5 s
    line.Update({.rows = 500, .estimated = 1000, .note = ""}, t0 + 5s);
    line.Finish("done, live again: 1,000 rows", t0 + 10s);
  });
  EXPECT_EQ(text.substr(0, text.find("done")),
            "view v: 0 of ~1,000 rows (0.0%)\n"
            "view v: 500 of ~1,000 rows (50.0%), 100 rows/s, about 5s left\n"
            "view v: ");
  EXPECT_NE(text.find("view v: done, live again: 1,000 rows ("), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\r'), std::string::npos);
}

TEST(ProgressLineTest, OnATerminalTheLineIsRewrittenInPlace) {
  const auto t0 = ProgressLine::Clock::now();
  const std::string text = Captured([&](std::FILE* out) {
    ProgressLine line(out, /*terminal=*/true, "view v", 5s, 250ms);
    line.Update({.rows = 0, .estimated = 0, .note = "waiting: the view is live"}, t0);
    line.Update({.rows = 10, .estimated = 100, .note = ""}, t0 + 1s);
    line.Finish("done", t0 + 2s);
  });
  EXPECT_EQ(text.substr(0, text.find("view v: done")),
            "\rview v: waiting: the view is live"
            "\rview v: 10 of ~100 rows (10.0%), 10 rows/s, about 9s left" +
                std::string(0, ' ') + "\n");
}

}  // namespace
}  // namespace pgderive
