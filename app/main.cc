// The pgderive binary: parse arguments, run. Everything else lives in the libraries.
#include <signal.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>

#include "app/backfill_command.h"
#include "app/reload.h"
#include "app/run.h"
#include "app/status_report.h"
#include "app/tail.h"
#include "app/teardown.h"
#include "app/validate.h"
#include "app/verify.h"
#include "app/version_command.h"

#ifndef PGDERIVE_VERSION
#define PGDERIVE_VERSION "unknown"
#endif

namespace {

// An option's check: a whole number of seconds, at least `min`.
CLI::Validator SecondsAtLeast(int min) {
  return CLI::Validator(
      [min](std::string& text) -> std::string {
        int value = 0;
        if (CLI::detail::lexical_cast(text, value) && value >= min) return {};
        return "must be a whole number of seconds, " + std::to_string(min) + " or more (not " +
               text + ")";
      },
      "SECONDS");
}

// The pieces of state a signal handler may touch.
std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};
static_assert(std::atomic<bool>::is_always_lock_free);

// Async-signal-safe: nothing to do if stderr is gone.
template <typename T>
void IgnoreResult(T) {}

// The first SIGTERM/SIGINT asks for a clean stop (finish the batch in flight, write
// checkpoints, confirm the slot, exit 0). A second one exits at once: every store's
// checkpoint is written with or after its data, so what was not confirmed is replayed
// by the next start and nothing is corrupted.
void OnSignal(int signal) {
  if (g_stop.exchange(true)) {
    static const char kMessage[] = "pgderive: second signal, exiting now\n";
    IgnoreResult(write(STDERR_FILENO, kMessage, sizeof kMessage - 1));
    _exit(128 + signal);
  }
}

void InstallSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// SIGHUP asks `run` to re-read its configuration file (app/reload.h).
void OnReloadSignal(int) { g_reload.store(true); }

void InstallReloadHandler() {
  struct sigaction action {};
  action.sa_handler = OnReloadSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGHUP, &action, nullptr);
}

// The allocator (glibc malloc, mallopt(3)). The stream and the backfill allocate and
// free values by the million in batches of a few MB: with glibc's defaults a freed batch
// gives its pages back to the kernel (the heap's top is trimmed past 128 KB; a block
// over the adaptive mmap threshold is unmapped), and the next batch faults them in again.
// Keeping up to 32 MB free at the heap's top and serving blocks below 32 MB from the
// heap (32 MB is the largest mmap threshold glibc takes on 64-bit) cut pgderive's CPU
// for a 1,000,000-row Redis fill by about a quarter (1.9-2.1 s to 1.32-1.52 s; peak RSS
// 60-89 MB before, 67-87 MB after; docs/benchmarks.md). The cost: up to 32 MB per
// allocator arena stays resident after a burst instead of going back at once. These
// calls override MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ and GLIBC_TUNABLES'
// malloc settings.
void TuneAllocator() {
#ifdef __GLIBC__
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  TuneAllocator();
  CLI::App app{
      "pgderive: derive views in Redis, OpenSearch and PostgreSQL from one "
      "PostgreSQL change stream"};
  app.set_version_flag("--version", std::string("pgderive ") + PGDERIVE_VERSION);
  app.require_subcommand(1);

  pgderive::TailOptions tail;
  std::string until;
  uint64_t limit = 0;
  CLI::App* tail_command = app.add_subcommand(
      "tail", "print the decoded change stream as JSON lines (does not move the pipeline's slot)");
  tail_command->add_option("-c,--config", tail.config_path, "configuration file")->required();
  tail_command->add_flag("--snapshot", tail.snapshot, "first print every row of the views' tables");
  tail_command->add_option("--slot", tail.slot,
                           "read this existing slot (never advanced) instead of a temporary one");
  tail_command->add_option("--limit", limit, "stop after this many changes");
  tail_command->add_option("--until-lsn", until,
                           "stop after the first transaction committed at or past this LSN");

  pgderive::RunOptions run;
  CLI::App* run_command = app.add_subcommand(
      "run",
      "create the publication and slot if missing, snapshot what needs it, then keep "
      "every view up to date until SIGTERM");
  run_command->add_option("-c,--config", run.config_path, "configuration file")->required();

  pgderive::ReloadOptions reload;
  int reload_timeout = 120;
  CLI::App* reload_command = app.add_subcommand(
      "reload",
      "make the running `pgderive run` re-read its configuration file and apply it without a "
      "restart (as SIGHUP does); an invalid file is refused and the running configuration "
      "stays");
  reload_command->add_option("-c,--config", reload.config_path, "configuration file")->required();
  reload_command
      ->add_option("--timeout", reload_timeout,
                   "seconds to wait for the new configuration to serve (120)")
      ->check(SecondsAtLeast(1));

  pgderive::VersionCommandOptions promote;
  bool promote_no_wait = false;
  int promote_timeout = 0;
  int promote_interval = 5;
  CLI::App* promote_command = app.add_subcommand(
      "promote",
      "switch a view's readers to its new version (a changed definition built next to the "
      "serving one); waits, with a progress line, while it builds");
  promote_command->add_option("-c,--config", promote.config_path, "configuration file")->required();
  promote_command->add_option("--view", promote.view, "the view")->required();
  promote_command->add_flag("--no-wait", promote_no_wait,
                            "refuse a version still building instead of waiting for it");
  promote_command
      ->add_option("--timeout", promote_timeout,
                   "seconds to wait for the version to be ready (0: no limit)")
      ->check(SecondsAtLeast(0));
  promote_command
      ->add_option("--interval", promote_interval,
                   "seconds between progress lines when not on a terminal (5)")
      ->check(SecondsAtLeast(1));
  pgderive::VersionCommandOptions rollback;
  rollback.rollback = true;
  CLI::App* rollback_command = app.add_subcommand(
      "rollback",
      "switch a view's readers back to its previous version, while it is retained "
      "(retain_previous)");
  rollback_command->add_option("-c,--config", rollback.config_path, "configuration file")
      ->required();
  rollback_command->add_option("--view", rollback.view, "the view")->required();

  pgderive::VerifyOptions verify;
  std::string verify_view;
  int verify_wait = 60;
  CLI::App* verify_command = app.add_subcommand(
      "verify",
      "compare each view with its definition applied to the source; exit 1 on any "
      "difference");
  verify_command->add_option("-c,--config", verify.config_path, "configuration file")->required();
  verify_command->add_option("--view", verify_view, "only this view");
  verify_command
      ->add_option("--wait", verify_wait,
                   "seconds to wait for the stores to catch up with the source (60)")
      ->check(SecondsAtLeast(0));
  verify_command
      ->add_option("--reads", verify.rounds,
                   "reads of a chunk that differs, each after the stores caught up again, "
                   "before what differed every time is reported (3; 1: at once)")
      ->check(CLI::Range(1, 10));
  verify_command->add_flag("--repair", verify.repair,
                           "refill each view found differing (as `pgderive backfill --view`), "
                           "then compare again; the exit status is the second comparison's");

  pgderive::ValidateOptions validate;
  CLI::App* validate_command = app.add_subcommand(
      "validate",
      "check the configuration file and, with --connect, the source and the stores, without "
      "changing anything; exit 2 listing every problem");
  validate_command->add_option("-c,--config", validate.config_path, "configuration file")
      ->required();
  validate_command->add_flag("--connect", validate.connect,
                             "also check the source and the stores (read-only)");

  pgderive::StatusOptions status;
  CLI::App* status_command = app.add_subcommand(
      "status",
      "print the slot's lag and retained WAL, each store's checkpoint and lag, and each view's "
      "state");
  status_command->add_option("-c,--config", status.config_path, "configuration file")->required();
  status_command->add_flag("--json", status.json, "print the report as JSON");

  pgderive::BackfillCommandOptions backfill;
  bool backfill_no_wait = false;
  int backfill_timeout = 0;
  CLI::App* backfill_command = app.add_subcommand(
      "backfill",
      "rebuild one view from the source while streaming goes on (the running pipeline does "
      "it); waits until the view is live again");
  backfill_command->add_option("-c,--config", backfill.config_path, "configuration file")
      ->required();
  backfill_command->add_option("--view", backfill.view, "the view to rebuild")->required();
  backfill_command->add_flag("--no-wait", backfill_no_wait, "return once the request is recorded");
  backfill_command
      ->add_option("--timeout", backfill_timeout,
                   "give up waiting after this many seconds (exit 1); 0: no limit")
      ->check(SecondsAtLeast(0));
  int backfill_interval = 5;
  backfill_command
      ->add_option("--progress-interval", backfill_interval,
                   "seconds between progress lines when the output is not a "
                   "terminal (5); on a terminal one line is updated in place")
      ->check(SecondsAtLeast(1));

  pgderive::TeardownOptions teardown;
  CLI::App* teardown_command = app.add_subcommand(
      "teardown",
      "remove the pipeline: its slot, publication and pgderive's metadata in the source and "
      "the stores (refused while `run` is active)");
  teardown_command->add_option("-c,--config", teardown.config_path, "configuration file")
      ->required();
  teardown_command->add_flag("--views", teardown.views,
                             "also remove the views' data (Redis keys, OpenSearch indexes, "
                             "postgres target tables)");

  // Bad command-line input is bad input: exit 2 with CLI11's message, as for a bad file
  // (CLI11's own exit codes, 105-115, would say nothing to a caller). --help and
  // --version exit 0.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (teardown_command->parsed()) return pgderive::RunTeardown(teardown);

  if (backfill_command->parsed()) {
    backfill.wait = !backfill_no_wait;
    backfill.timeout = std::chrono::seconds(backfill_timeout);
    backfill.interval = std::chrono::seconds(std::max(1, backfill_interval));
    return pgderive::RunBackfill(backfill);
  }

  if (promote_command->parsed()) {
    promote.wait = !promote_no_wait;
    promote.timeout = std::chrono::seconds(std::max(0, promote_timeout));
    promote.interval = std::chrono::seconds(std::max(1, promote_interval));
    return pgderive::RunVersionCommand(promote);
  }
  if (rollback_command->parsed()) return pgderive::RunVersionCommand(rollback);

  if (reload_command->parsed()) {
    reload.timeout = std::chrono::seconds(reload_timeout);
    return pgderive::RunReload(reload);
  }

  if (run_command->parsed()) {
    InstallSignalHandlers();
    InstallReloadHandler();
    run.stop = &g_stop;
    run.reload = &g_reload;
    return pgderive::RunPipeline(run);
  }
  if (validate_command->parsed()) return pgderive::RunValidate(validate);
  if (status_command->parsed()) return pgderive::RunStatus(status);
  if (verify_command->parsed()) {
    if (!verify_view.empty()) verify.view = verify_view;
    verify.wait = std::chrono::seconds(verify_wait);
    return pgderive::RunVerify(verify);
  }

  if (tail_command->parsed()) {
    if (limit > 0) tail.limit = limit;
    if (!until.empty()) {
      tail.until = pgderive::Lsn::Parse(until);
      if (!tail.until) {
        std::fprintf(stderr, "pgderive tail: --until-lsn '%s' is not an LSN like 16/B374D848\n",
                     until.c_str());
        return 2;
      }
    }
    InstallSignalHandlers();
    tail.stop = &g_stop;
    return pgderive::RunTail(tail);
  }
  return 0;
}
