// The watermark window fed synthetic change sequences: which of a chunk's rows it
// places at H (with the views' state), which chunks it reads again, what a reshape, a
// request and a "done" yield. No server: changes and chunk reads are made by hand.
#include "snapshot/watermark_window.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "snapshot/view_state.h"

namespace pgderive {
namespace {

using Verdict = WatermarkWindow::Verdict;

constexpr char kStore[] = "cache";
constexpr char kView[] = "items_cache";
constexpr char kRun[] = "run-1";

TupleValue Text(std::string_view data) { return {TupleValueKind::kText, data}; }
constexpr TupleValue kUnchanged{TupleValueKind::kUnchanged, {}};
constexpr TupleValue kNull{TupleValueKind::kNull, {}};

Lsn At(uint64_t value) { return Lsn{value}; }

// public.items (k int4 key, v text), or with `extra` columns after them.
std::shared_ptr<const RelationSchema> Items(std::vector<ColumnSchema> extra = {}) {
  auto schema = std::make_shared<RelationSchema>();
  schema->id = RelationId{16384};
  schema->nspname = "public";
  schema->relname = "items";
  schema->columns = {{"k", 23, -1, true, ""}, {"v", 25, -1, false, ""}};
  for (ColumnSchema& c : extra) schema->columns.push_back(std::move(c));
  return schema;
}

std::shared_ptr<const RelationSchema> Other() {
  auto schema = std::make_shared<RelationSchema>();
  schema->id = RelationId{16400};
  schema->nspname = "public";
  schema->relname = "other";
  schema->columns = {{"k", 23, -1, true, ""}, {"v", 25, -1, false, ""}};
  return schema;
}

// A change as the stream thread meets it, and what the window made of it.
struct Fed {
  std::vector<OwnedChange> out;
  WatermarkWindow::Events events;
};

Fed Feed(WatermarkWindow& window, Lsn lsn, uint32_t index, const PgOutputMessage& message,
         std::vector<std::shared_ptr<const RelationSchema>> relations = {}) {
  Change change;
  change.commit_lsn = lsn;
  change.index = index;
  change.message = &message;
  change.relations = relations;
  Fed fed;
  window.OnChange(change, fed.out, fed.events);
  return fed;
}

Fed Mark(WatermarkWindow& window, Lsn lsn, const std::string& content, uint32_t index = 0,
         std::string_view prefix = kBackfillPrefix) {
  LogicalMessage message;
  message.flags = 1;
  message.lsn = lsn;
  message.prefix = prefix;
  message.content = content;
  return Feed(window, lsn, index, PgOutputMessage{message});
}

Fed Insert(WatermarkWindow& window, Lsn lsn, std::shared_ptr<const RelationSchema> schema,
           std::vector<TupleValue> row) {
  InsertMessage insert;
  insert.new_tuple.columns = std::move(row);
  return Feed(window, lsn, 0, PgOutputMessage{insert}, {std::move(schema)});
}

Fed Update(WatermarkWindow& window, Lsn lsn, std::vector<TupleValue> row, char old_kind = '\0',
           std::vector<TupleValue> old = {}) {
  UpdateMessage update;
  update.old_kind = old_kind;
  update.old_tuple.columns = std::move(old);
  update.new_tuple.columns = std::move(row);
  return Feed(window, lsn, 0, PgOutputMessage{update}, {Items()});
}

Fed Delete(WatermarkWindow& window, Lsn lsn, std::string_view key) {
  DeleteMessage del;
  del.old_tuple.columns = {Text(key), kNull};
  return Feed(window, lsn, 0, PgOutputMessage{del}, {Items()});
}

Fed Truncate(WatermarkWindow& window, Lsn lsn,
             std::vector<std::shared_ptr<const RelationSchema>> tables) {
  return Feed(window, lsn, 0, PgOutputMessage{TruncateMessage{}}, std::move(tables));
}

std::string Values(const TupleData& tuple) {
  std::string out;
  for (const TupleValue& v : tuple.columns) {
    if (!out.empty()) out += ",";
    out += v.kind == TupleValueKind::kText ? std::string(v.data) : std::string("null");
  }
  return out;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ";") + s;
  return out;
}

// One line per placed change: where, what, for whom.
//   row   "0/200#6 row cache/items_cache (1,a)"
//   state "0/200#9 state cache/items_cache backfilling after=["3"] oid=16384 columns=k 23;v 25"
std::vector<std::string> Render(const std::vector<OwnedChange>& changes) {
  std::vector<std::string> lines;
  for (const OwnedChange& c : changes) {
    std::string line = c.commit_lsn.ToString() + "#" + std::to_string(c.index) + " ";
    const ViewControl& control = *c.control;
    const std::string whom = control.store + "/" + Join(control.views);
    if (c.op == ChangeOp::kBackfillRow) {
      line += "row " + whom + " (" + Values(c.new_tuple) + ")";
    } else if (c.op == ChangeOp::kViewState) {
      line += "state " + whom + (control.backfilling ? " backfilling" : " live") +
              (control.clear ? " clear" : "") +
              (control.after ? " after=" + *control.after : std::string()) +
              " oid=" + std::to_string(control.table_oid) + " columns=" + Join(control.columns);
    } else {
      line += "op " + std::string(1, static_cast<char>(c.op));
    }
    lines.push_back(line);
  }
  return lines;
}

class WatermarkWindowTest : public testing::Test {
 protected:
  WatermarkWindowTest() : window_(Options({BackfillView{kStore, kView, "public.items", true}})) {}

  WatermarkWindow::Options Options(std::vector<BackfillView> views) {
    return {.pipeline = "p1",
            .run = kRun,
            .views = std::move(views),
            .checkpoint = [this](const std::string& store) { return checkpoints_[store]; }};
  }

  // Job 1 fills kView of kStore from public.items (as the driver makes it).
  std::shared_ptr<BackfillJob> RunningJob() {
    auto job = std::make_shared<BackfillJob>();
    job->id = 1;
    job->store = kStore;
    job->table = "public.items";
    job->views = {kView};
    job->columns = ColumnsOf(*Items());
    job->table_oid = 16384;
    window_.SetRunning(job);
    return job;
  }

  // Chunk `id` read (1,a) (2,b) (3,c).
  void BeginAndRead(uint64_t id, const std::shared_ptr<BackfillJob>& job) {
    window_.BeginChunk(id, job, Items(), {"k"});
    window_.ChunkRead(id, {{"1", "a"}, {"2", "b"}, {"3", "c"}});
  }

  std::map<std::string, Lsn> checkpoints_;
  WatermarkWindow window_;
};

constexpr char kColumns[] = "columns=k 23;v 25";

TEST_F(WatermarkWindowTest, TheRowsArePlacedAtHThenTheStateWithTheLastKey) {
  auto job = RunningJob();
  window_.BeginChunk(7, job, Items(), {"k"});
  EXPECT_TRUE(Mark(window_, At(0x100), window_.Message("low", 7)).out.empty());
  window_.ChunkRead(7, {{"1", "a"}, {"2", std::nullopt}, {"3", "c"}});
  EXPECT_EQ(window_.ChunkVerdict(7), Verdict::kPending);

  const Fed high = Mark(window_, At(0x200), window_.Message("high", 7), /*index=*/5);
  EXPECT_TRUE(high.events.decided);
  EXPECT_EQ(Render(high.out), (std::vector<std::string>{
                                  "0/200#6 row cache/items_cache (1,a)",
                                  "0/200#7 row cache/items_cache (2,null)",
                                  "0/200#8 row cache/items_cache (3,c)",
                                  "0/200#9 state cache/items_cache backfilling after=[\"3\"] "
                                  "oid=16384 " +
                                      std::string(kColumns),
                              }));
  // The rows carry the schema they were read with.
  EXPECT_EQ(high.out[0].relation().QualifiedName(), "public.items");
  EXPECT_EQ(window_.ChunkVerdict(7), Verdict::kDone);

  const WatermarkWindow::ChunkOutcome outcome = window_.EndChunk(7);
  EXPECT_EQ(outcome.verdict, Verdict::kDone);
  EXPECT_EQ(outcome.watermark, At(0x200));
  EXPECT_EQ(outcome.rows, 3u);
  EXPECT_EQ(outcome.bytes, 5u);
  EXPECT_EQ(outcome.last, "[\"3\"]");
  EXPECT_EQ(window_.chunks_in_flight(), 0u);
}

// A chunk that reads no row - the end of the table met by a fill resumed after its last
// key, or after a chunk of exactly the limit - keeps the fill's position: a state
// without one means "from the start", which a store takes as a new fill (OpenSearch
// began a new, empty index and moved its alias there at the end). At the very start of
// an empty table no state is placed (the fill's own start said it).
TEST_F(WatermarkWindowTest, AChunkThatReadsNoRowKeepsTheFillsPosition) {
  auto job = RunningJob();
  window_.BeginChunk(7, job, Items(), {"k"}, /*prev=*/0, std::string("[\"3\"]"));
  Mark(window_, At(0x100), window_.Message("low", 7));
  window_.ChunkRead(7, {});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 7), /*index=*/5);
  EXPECT_EQ(Render(high.out),
            (std::vector<std::string>{"0/200#6 state cache/items_cache backfilling after=[\"3\"] "
                                      "oid=16384 " +
                                      std::string(kColumns)}));
  EXPECT_EQ(window_.EndChunk(7).verdict, Verdict::kDone);

  window_.BeginChunk(8, job, Items(), {"k"});
  Mark(window_, At(0x300), window_.Message("low", 8));
  window_.ChunkRead(8, {});
  const Fed empty = Mark(window_, At(0x400), window_.Message("high", 8));
  EXPECT_TRUE(empty.out.empty()) << Render(empty.out).front();
  EXPECT_EQ(window_.ChunkVerdict(8), Verdict::kDone);
  EXPECT_EQ(window_.EndChunk(8).verdict, Verdict::kDone);
}

TEST_F(WatermarkWindowTest, ARepairPlacesTheRowsNotChangedInTheWindowAndLeavesTheState) {
  // The background verifier's repair of a live view: a fill's chunk that records no state.
  auto job = RunningJob();
  job->repair = true;
  BeginAndRead(7, job);
  Mark(window_, At(0x100), window_.Message("low", 7));
  Update(window_, At(0x150), {Text("2"), Text("z")});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 7), /*index=*/5);
  EXPECT_EQ(Render(high.out), (std::vector<std::string>{
                                  "0/200#6 row cache/items_cache (1,a)",
                                  "0/200#7 row cache/items_cache (3,c)",
                              }));
  EXPECT_EQ(window_.ChunkVerdict(7), Verdict::kDone);
  EXPECT_EQ(window_.ChunkWatermark(7), At(0x200));
  EXPECT_EQ(window_.EndChunk(7).verdict, Verdict::kDone);
}

TEST_F(WatermarkWindowTest, AChangeInsideTheWindowTakesItsKeyOutOfTheChunk) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  // An update of 2 and a delete of 3 between L and H; an insert of 9 (not in the chunk)
  // and a change of another table with key 1 take nothing out.
  EXPECT_TRUE(Update(window_, At(0x110), {Text("2"), Text("b2")}).out.empty());
  EXPECT_TRUE(Delete(window_, At(0x120), "3").out.empty());
  Insert(window_, At(0x130), Items(), {Text("9"), Text("z")});
  Insert(window_, At(0x140), Other(), {Text("1"), Text("other")});

  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_EQ(Render(high.out),
            (std::vector<std::string>{
                "0/200#1 row cache/items_cache (1,a)",
                "0/200#2 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
  // The last key is the last row read, placed or not: the next chunk starts after it.
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kDone);
}

TEST_F(WatermarkWindowTest, AChangeBeforeLOrAfterHTakesNothingOut) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  // Before L: the chunk's read comes after it (the driver waited for its writer).
  Update(window_, At(0x090), {Text("1"), Text("a0")});
  Delete(window_, At(0x095), "2");
  Mark(window_, At(0x100), window_.Message("low", 1));
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  // After H: applied after the chunk's rows, as any change.
  const Fed after = Update(window_, At(0x210), {Text("3"), Text("c2")});
  EXPECT_TRUE(after.out.empty());
  EXPECT_FALSE(after.events.decided);

  EXPECT_EQ(Render(high.out),
            (std::vector<std::string>{
                "0/200#1 row cache/items_cache (1,a)",
                "0/200#2 row cache/items_cache (2,b)",
                "0/200#3 row cache/items_cache (3,c)",
                "0/200#4 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kDone);
}

TEST_F(WatermarkWindowTest, ATruncateOfTheTableInsideTheWindowHasTheChunkReadAgain) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  // A truncate of another table does not spoil it; one naming the table among others
  // does.
  Truncate(window_, At(0x110), {Other()});
  Truncate(window_, At(0x120), {Other(), Items()});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_TRUE(high.events.decided);
  EXPECT_TRUE(high.out.empty()) << "nothing placed, not even the state";
  const WatermarkWindow::ChunkOutcome outcome = window_.EndChunk(1);
  EXPECT_EQ(outcome.verdict, Verdict::kRetry);
  EXPECT_EQ(outcome.rows, 3u);  // the driver halves the next chunk
}

TEST_F(WatermarkWindowTest, ATruncateOfAnotherTableLeavesTheChunkWhole) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  Truncate(window_, At(0x110), {Other()});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_EQ(high.out.size(), 4u);
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kDone);
}

TEST_F(WatermarkWindowTest, AKeyChangeInsideTheWindowTakesOutBothKeys) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  // Row 1 moves to key 3: the old key comes in 'K', the new row whole.
  Update(window_, At(0x110), {Text("3"), Text("a")}, 'K', {Text("1"), kNull});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_EQ(Render(high.out),
            (std::vector<std::string>{
                "0/200#1 row cache/items_cache (2,b)",
                "0/200#2 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
  // Every value present: the job goes on (no restart).
  EXPECT_FALSE(job->restart);
}

TEST_F(WatermarkWindowTest, AToastUnchangedUpdateInsideTheWindowHasTheChunkReadAgain) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  // v TOASTed and unchanged, no old row to take it from: the view may not hold row 2.
  Update(window_, At(0x110), {Text("2"), kUnchanged});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_TRUE(high.out.empty());
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kRetry);
}

TEST_F(WatermarkWindowTest, AToastUnchangedValueTheOldRowCarriesIsTakenFromIt) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  // REPLICA IDENTITY FULL: the old row carries v, so the update is whole.
  Update(window_, At(0x110), {Text("2"), kUnchanged}, 'O', {Text("2"), Text("b")});
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_EQ(Render(high.out),
            (std::vector<std::string>{
                "0/200#1 row cache/items_cache (1,a)",
                "0/200#2 row cache/items_cache (3,c)",
                "0/200#3 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
}

TEST_F(WatermarkWindowTest, AChangeWhoseKeyCannotBeReadHasTheChunkReadAgain) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  Delete(window_, At(0x110), "2");
  DeleteMessage keyless;  // a key arriving null: which row changed is unknown
  keyless.old_tuple.columns = {kNull, kNull};
  Feed(window_, At(0x120), 0, PgOutputMessage{keyless}, {Items()});
  EXPECT_TRUE(Mark(window_, At(0x200), window_.Message("high", 1)).out.empty());
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kRetry);
}

TEST_F(WatermarkWindowTest, AToastedKeyChangeRestartsTheRunningJob) {
  auto job = RunningJob();
  // Row 1 moves to key 7 (behind no chunk yet read) and leaves v out: the view may not
  // hold row 1 to take v from, so the whole job starts again.
  Update(window_, At(0x110), {Text("7"), kUnchanged}, 'K', {Text("1"), kNull});
  EXPECT_TRUE(job->restart);
}

TEST_F(WatermarkWindowTest, AToastedValueLeftOutWithTheKeyUnchangedIsNoRestart) {
  auto job = RunningJob();
  Update(window_, At(0x110), {Text("1"), kUnchanged}, 'K', {Text("1"), kNull});
  EXPECT_FALSE(job->restart);
  // Nor a change of another table.
  UpdateMessage other;
  other.old_kind = 'K';
  other.old_tuple.columns = {Text("1"), kNull};
  other.new_tuple.columns = {Text("7"), kUnchanged};
  Feed(window_, At(0x120), 0, PgOutputMessage{other}, {Other()});
  EXPECT_FALSE(job->restart);
}

TEST_F(WatermarkWindowTest, AStreamRestartHasEveryChunkInFlightReadAgain) {
  auto job = RunningJob();
  BeginAndRead(1, job);  // L seen, then the stream restarts
  Mark(window_, At(0x100), window_.Message("low", 1));
  window_.BeginChunk(2, job, Items(), {"k"});  // L not yet seen
  window_.BeginDone(1);
  window_.OnStreamRestart();
  EXPECT_EQ(window_.ChunkVerdict(1), Verdict::kRetry);
  EXPECT_EQ(window_.ChunkVerdict(2), Verdict::kRetry);
  EXPECT_EQ(window_.DoneVerdict(1), Verdict::kRetry);
  // The marks met again from the slot place nothing.
  Mark(window_, At(0x100), window_.Message("low", 1));
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_TRUE(high.out.empty());
  EXPECT_FALSE(high.events.decided);
  EXPECT_TRUE(Mark(window_, At(0x300), window_.Message("done", 1)).out.empty());
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kRetry);
  EXPECT_EQ(window_.EndChunk(2).verdict, Verdict::kRetry);
  EXPECT_EQ(window_.EndDone(1).first, Verdict::kRetry);
}

TEST_F(WatermarkWindowTest, AChunkWithoutItsLOrItsRowsOrOfACancelledJobIsReadAgain) {
  auto job = RunningJob();
  // No L seen (it was an earlier run's, or lost).
  BeginAndRead(1, job);
  EXPECT_TRUE(Mark(window_, At(0x200), window_.Message("high", 1)).out.empty());
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kRetry);
  // Not read.
  window_.BeginChunk(2, job, Items(), {"k"});
  Mark(window_, At(0x300), window_.Message("low", 2));
  EXPECT_TRUE(Mark(window_, At(0x400), window_.Message("high", 2)).out.empty());
  EXPECT_EQ(window_.EndChunk(2).verdict, Verdict::kRetry);
  // Its job replaced meanwhile.
  BeginAndRead(3, job);
  Mark(window_, At(0x500), window_.Message("low", 3));
  job->cancelled = true;
  EXPECT_TRUE(Mark(window_, At(0x600), window_.Message("high", 3)).out.empty());
  EXPECT_EQ(window_.EndChunk(3).verdict, Verdict::kRetry);
}

TEST_F(WatermarkWindowTest, MarksOfAnotherRunOrPipelineOrPrefixAreNotThisChunks) {
  auto job = RunningJob();
  BeginAndRead(1, job);
  Mark(window_, At(0x100), window_.Message("low", 1));
  WatermarkWindow earlier(
      {.pipeline = "p1", .run = "run-0", .views = {}, .checkpoint = [](const std::string&) {
         return Lsn{};
       }});
  WatermarkWindow other_pipeline(
      {.pipeline = "p2", .run = kRun, .views = {}, .checkpoint = [](const std::string&) {
         return Lsn{};
       }});
  EXPECT_TRUE(Mark(window_, At(0x200), earlier.Message("high", 1)).out.empty());
  EXPECT_TRUE(Mark(window_, At(0x210), other_pipeline.Message("high", 1)).out.empty());
  EXPECT_TRUE(Mark(window_, At(0x220), window_.Message("high", 1), 0, "other-prefix").out.empty());
  EXPECT_TRUE(Mark(window_, At(0x230), "not json").out.empty());
  EXPECT_TRUE(Mark(window_, At(0x240), R"({"pipeline":"p1","run":"run-1","mark":"high","id":-1})")
                  .out.empty());
  EXPECT_EQ(window_.ChunkVerdict(1), Verdict::kPending);
  EXPECT_EQ(Mark(window_, At(0x300), window_.Message("high", 1)).out.size(), 4u);
}

TEST_F(WatermarkWindowTest, DoneMarksTheViewsLiveAtItsPosition) {
  auto job = RunningJob();
  window_.BeginDone(1);
  const Fed done = Mark(window_, At(0x500), window_.Message("done", 1), /*index=*/2);
  EXPECT_TRUE(done.events.decided);
  EXPECT_EQ(Render(done.out), (std::vector<std::string>{"0/500#2 state cache/items_cache live "
                                                        "oid=16384 " +
                                                        std::string(kColumns)}));
  EXPECT_EQ(window_.EndDone(1), std::make_pair(Verdict::kDone, At(0x500)));
}

TEST_F(WatermarkWindowTest, DoneOfAJobNotRunningIsTriedAgain) {
  auto job = RunningJob();
  window_.BeginDone(1);
  window_.SetRunning(nullptr);
  const Fed done = Mark(window_, At(0x500), window_.Message("done", 1));
  EXPECT_TRUE(done.out.empty());
  EXPECT_TRUE(done.events.decided);
  EXPECT_EQ(window_.EndDone(1).first, Verdict::kRetry);
}

class WatermarkWindowFollowTest : public WatermarkWindowTest {
 protected:
  WatermarkWindowFollowTest()
      : following_(Options({BackfillView{kStore, kView, "public.items", true, true},
                            BackfillView{"search", "items_search", "public.items", true, true},
                            BackfillView{kStore, "fixed", "public.items", true, false},
                            BackfillView{"pg", "items_mv", "public.items", false, true}})) {
    following_.SetColumns(kStore, kView, ColumnsOf(*Items()));
    following_.SetColumns("search", "items_search", ColumnsOf(*Items()));
  }
  WatermarkWindow following_;
};

TEST_F(WatermarkWindowFollowTest, AReshapeYieldsTheStateChangeAndAJobPerStore) {
  auto before = Items();
  EXPECT_TRUE(Insert(following_, At(0x100), before, {Text("1"), Text("a")}).out.empty());
  checkpoints_["search"] = At(0x300);  // has applied past the reshape already

  // ADD COLUMN: the first change under the new schema.
  auto added = Items({{"n", 23, -1, false, ""}});
  ASSERT_TRUE(
      following_.Concerns(Change{At(0x200), 0, nullptr,
                                 std::span<const std::shared_ptr<const RelationSchema>>(&added, 1)},
                          /*active=*/false));
  InsertMessage insert;
  insert.new_tuple.columns = {Text("2"), Text("b"), Text("5")};
  const Fed reshaped = Feed(following_, At(0x200), 3, PgOutputMessage{insert}, {added});
  EXPECT_EQ(Render(reshaped.out),
            (std::vector<std::string>{"0/200#3 state cache/items_cache backfilling oid=16384 "
                                      "columns=k 23;v 25;n 23"}));
  ASSERT_EQ(reshaped.events.jobs.size(), 1u);
  const auto& job = reshaped.events.jobs[0];
  EXPECT_EQ(job.store, kStore);
  EXPECT_EQ(job.table, "public.items");
  EXPECT_EQ(job.views, std::vector<std::string>{kView});
  EXPECT_TRUE(job.reshaped);

  // Later changes under the same schema: nothing; and the window lets them pass unlocked.
  Change next{At(0x210), 0, nullptr,
              std::span<const std::shared_ptr<const RelationSchema>>(&added, 1)};
  EXPECT_FALSE(following_.Concerns(next, /*active=*/false));
  EXPECT_TRUE(following_.Concerns(next, /*active=*/true));
  EXPECT_TRUE(Insert(following_, At(0x210), added, {Text("3"), Text("c"), Text("6")}).out.empty());

  // DROP COLUMN n again: back to the first shape, again a job.
  checkpoints_["search"] = Lsn{};
  const Fed dropped = Insert(following_, At(0x400), Items(), {Text("4"), Text("d")});
  EXPECT_EQ(Render(dropped.out),
            (std::vector<std::string>{"0/400#0 state cache/items_cache backfilling oid=16384 " +
                                      std::string(kColumns)}));
  ASSERT_EQ(dropped.events.jobs.size(), 1u);
  EXPECT_EQ(dropped.events.jobs[0].views, std::vector<std::string>{kView})
      << "search never saw the added column (it had passed it)";
}

TEST_F(WatermarkWindowFollowTest, DoneRecordsTheColumnsTheViewsWereFilledWith) {
  // The job filled the view with a column the view's recorded state does not have yet
  // (it read the table after ADD COLUMN): once live, changes under that shape are no
  // reshape.
  auto added = Items({{"n", 23, -1, false, ""}});
  auto job = std::make_shared<BackfillJob>();
  job->id = 4;
  job->store = kStore;
  job->table = "public.items";
  job->views = {kView};
  job->columns = ColumnsOf(*added);
  job->table_oid = 16384;
  following_.SetRunning(job);
  following_.BeginDone(4);
  const Fed done = Mark(following_, At(0x500), following_.Message("done", 4));
  EXPECT_EQ(Render(done.out), (std::vector<std::string>{"0/500#0 state cache/items_cache live "
                                                        "oid=16384 columns=k 23;v 25;n 23"}));
  checkpoints_["search"] = At(0x600);
  const Fed fed = Insert(following_, At(0x510), added, {Text("1"), Text("a"), Text("5")});
  EXPECT_TRUE(fed.out.empty());
  EXPECT_TRUE(fed.events.jobs.empty());
}

TEST_F(WatermarkWindowFollowTest, ARequestClearsTheViewAtItsPositionAndQueuesAJob) {
  // What `pgderive backfill` writes; no run: any run's.
  const std::string request = BackfillRequestMessage("p1", "items_cache");
  EXPECT_EQ(request, R"({"mark":"request","pipeline":"p1","view":"items_cache"})");
  const Fed fed = Mark(following_, At(0x100), request, /*index=*/1);
  EXPECT_EQ(Render(fed.out),
            (std::vector<std::string>{"0/100#1 state cache/items_cache backfilling clear oid=0 " +
                                      std::string(kColumns)}));
  EXPECT_EQ(fed.events.requested,
            (std::vector<std::pair<std::string, std::string>>{{kStore, kView}}));
  ASSERT_EQ(fed.events.jobs.size(), 1u);
  EXPECT_FALSE(fed.events.jobs[0].reshaped);

  // A postgres view is recomputed: cleared, no job.
  const Fed pg =
      Mark(following_, At(0x110), R"({"pipeline":"p1","mark":"request","view":"items_mv"})");
  EXPECT_EQ(Render(pg.out),
            (std::vector<std::string>{"0/110#0 state pg/items_mv live clear oid=0 columns="}));
  EXPECT_TRUE(pg.events.jobs.empty());

  // A store past the request has acted on it already.
  checkpoints_[kStore] = At(0x200);
  const Fed passed = Mark(following_, At(0x120), request);
  EXPECT_TRUE(passed.out.empty());
  EXPECT_TRUE(passed.events.requested.empty());

  // A view this configuration does not have.
  const Fed unknown =
      Mark(following_, At(0x300), R"({"pipeline":"p1","mark":"request","view":"nope"})");
  EXPECT_TRUE(unknown.out.empty());
  EXPECT_EQ(unknown.events.requested,
            (std::vector<std::pair<std::string, std::string>>{{"", "nope"}}));
}

TEST_F(WatermarkWindowTest, ARequestForAPostgresViewRefillsTheMirrorsItReadsFromTheSource) {
  // `pgderive backfill --view totals`: the view derived again from the source, not from
  // what its mirrors hold (a mirror damaged behind pgderive's back is filled again; the
  // store builds the view's table from them once they are filled: nothing of its own).
  BackfillView totals{"pg", "totals", "", false, false};
  totals.fills = {"mirror public.items", "mirror public.other"};
  WatermarkWindow window(
      Options({totals, BackfillView{"pg", "mirror public.items", "public.items", true, false},
               BackfillView{"pg", "mirror public.other", "public.other", true, false},
               BackfillView{"pg", "mirror public.unread", "public.unread", true, false}}));
  const Fed fed = Mark(window, At(0x100), BackfillRequestMessage("p1", "totals"), /*index=*/2);
  EXPECT_EQ(Render(fed.out),
            (std::vector<std::string>{
                "0/100#2 state pg/mirror public.items backfilling clear oid=0 columns=",
                "0/100#2 state pg/mirror public.other backfilling clear oid=0 columns="}));
  EXPECT_EQ(fed.events.requested,
            (std::vector<std::pair<std::string, std::string>>{
                {"pg", "totals"}, {"pg", "mirror public.items"}, {"pg", "mirror public.other"}}));
  ASSERT_EQ(fed.events.jobs.size(), 2u);
  EXPECT_EQ(fed.events.jobs[0].table, "public.items");
  EXPECT_EQ(fed.events.jobs[0].views, std::vector<std::string>{"mirror public.items"});
  EXPECT_EQ(fed.events.jobs[1].table, "public.other");
  EXPECT_EQ(fed.events.jobs[1].views, std::vector<std::string>{"mirror public.other"});
}

TEST_F(WatermarkWindowTest, WithoutFollowingViewsOrAJobOnlyMessagesConcernTheWindow) {
  auto schema = Items();
  InsertMessage insert;
  PgOutputMessage row = insert;
  PgOutputMessage message = LogicalMessage{};
  Change change{At(0x100), 0, &row,
                std::span<const std::shared_ptr<const RelationSchema>>(&schema, 1)};
  EXPECT_FALSE(window_.Concerns(change, /*active=*/false));
  EXPECT_TRUE(window_.Concerns(change, /*active=*/true));
  change.message = &message;
  EXPECT_TRUE(window_.Concerns(change, /*active=*/false));
}

// ---- pipelined chunks and several jobs at once ----

// Chunk `id` following `prev`, read with rows `keys` (values "v<key>").
void BeginAndReadKeys(WatermarkWindow& window, uint64_t id, const std::shared_ptr<BackfillJob>& job,
                      uint64_t prev, std::vector<std::string> keys,
                      std::shared_ptr<const RelationSchema> schema = Items()) {
  window.BeginChunk(id, job, std::move(schema), {"k"}, prev);
  ChunkRows rows;
  for (const std::string& k : keys) rows.push_back({k, "v" + k});
  window.ChunkRead(id, std::move(rows));
}

TEST_F(WatermarkWindowTest, APipelinedChunkIsPlacedAfterTheOneItFollows) {
  auto job = RunningJob();
  // Chunk 2 is read while chunk 1's rows wait for the store: its own L and H.
  BeginAndReadKeys(window_, 1, job, 0, {"1", "2", "3"});
  Mark(window_, At(0x100), window_.Message("low", 1));
  Update(window_, At(0x110), {Text("2"), Text("b2")});
  const Fed high1 = Mark(window_, At(0x200), window_.Message("high", 1));
  BeginAndReadKeys(window_, 2, job, 1, {"4", "5"});
  EXPECT_EQ(window_.ChunkPosition(2),
            std::make_pair(size_t{2}, std::optional<std::string>("[\"5\"]")));
  Mark(window_, At(0x210), window_.Message("low", 2));
  // Chunk 1's verdict taken before chunk 2's H: it was placed, so chunk 2 is.
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kDone);
  Delete(window_, At(0x220), "5");
  const Fed high2 = Mark(window_, At(0x300), window_.Message("high", 2));
  EXPECT_EQ(Render(high1.out),
            (std::vector<std::string>{
                "0/200#1 row cache/items_cache (1,v1)",
                "0/200#2 row cache/items_cache (3,v3)",
                "0/200#3 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
  EXPECT_EQ(Render(high2.out),
            (std::vector<std::string>{
                "0/300#1 row cache/items_cache (4,v4)",
                "0/300#2 state cache/items_cache backfilling after=[\"5\"] oid=16384 " +
                    std::string(kColumns),
            }));
  EXPECT_EQ(window_.EndChunk(2).verdict, Verdict::kDone);
}

TEST_F(WatermarkWindowTest, AChunkReadAgainHasEveryChunkAfterItReadAgain) {
  auto job = RunningJob();
  // Three chunks in flight; the first one's window holds a truncate.
  BeginAndReadKeys(window_, 1, job, 0, {"1", "2"});
  Mark(window_, At(0x100), window_.Message("low", 1));
  Truncate(window_, At(0x110), {Items()});
  EXPECT_TRUE(Mark(window_, At(0x200), window_.Message("high", 1)).out.empty());
  BeginAndReadKeys(window_, 2, job, 1, {"3", "4"});
  Mark(window_, At(0x210), window_.Message("low", 2));
  EXPECT_TRUE(Mark(window_, At(0x300), window_.Message("high", 2)).out.empty());
  EXPECT_EQ(window_.ChunkVerdict(1), Verdict::kRetry);
  EXPECT_EQ(window_.ChunkVerdict(2), Verdict::kRetry);
  // Chunk 3 began before the driver saw chunk 1's verdict; it follows chunk 2, which the
  // driver gives up before chunk 3's H: chunk 3 is read again too.
  BeginAndReadKeys(window_, 3, job, 2, {"5", "6"});
  Mark(window_, At(0x310), window_.Message("low", 3));
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kRetry);
  EXPECT_EQ(window_.EndChunk(2).verdict, Verdict::kRetry);
  EXPECT_TRUE(Mark(window_, At(0x400), window_.Message("high", 3)).out.empty());
  EXPECT_EQ(window_.EndChunk(3).verdict, Verdict::kRetry);
  EXPECT_EQ(window_.chunks_in_flight(), 0u);
}

TEST_F(WatermarkWindowTest, AChunkGivenUpBeforeItsHHasItsFollowersReadAgain) {
  auto job = RunningJob();
  BeginAndReadKeys(window_, 1, job, 0, {"1"});
  Mark(window_, At(0x100), window_.Message("low", 1));
  BeginAndReadKeys(window_, 2, job, 1, {"2"});
  BeginAndReadKeys(window_, 3, job, 2, {"3"});
  // The driver gives chunk 1 up (its H never written: an error on its connection).
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kRetry);
  Mark(window_, At(0x200), window_.Message("low", 2));
  EXPECT_TRUE(Mark(window_, At(0x300), window_.Message("high", 2)).out.empty());
  Mark(window_, At(0x310), window_.Message("low", 3));
  EXPECT_TRUE(Mark(window_, At(0x400), window_.Message("high", 3)).out.empty());
  EXPECT_EQ(window_.ChunkVerdict(2), Verdict::kRetry);
  EXPECT_EQ(window_.ChunkVerdict(3), Verdict::kRetry);
}

TEST_F(WatermarkWindowTest, AStreamRestartHasThePipelinedChunksReadAgain) {
  auto job = RunningJob();
  BeginAndReadKeys(window_, 1, job, 0, {"1"});
  Mark(window_, At(0x100), window_.Message("low", 1));
  Mark(window_, At(0x200), window_.Message("high", 1));
  BeginAndReadKeys(window_, 2, job, 1, {"2"});
  Mark(window_, At(0x210), window_.Message("low", 2));
  window_.OnStreamRestart();
  // Chunk 1 was placed (its rows were lost with what was not dispatched: the driver
  // sees the restart by its generation); chunk 2 is read again.
  EXPECT_EQ(window_.ChunkVerdict(1), Verdict::kDone);
  EXPECT_EQ(window_.ChunkVerdict(2), Verdict::kRetry);
  // Replayed from the slot, chunk 2's H places nothing.
  EXPECT_TRUE(Mark(window_, At(0x300), window_.Message("high", 2)).out.empty());
}

// Two jobs of two stores and two tables, their windows open at once and interleaved:
// each window records only its own table's changes, places only its own job's rows, and
// each job's "done" marks only its own views live.
TEST_F(WatermarkWindowTest, InterleavedWindowsOfTwoJobsAreEachTheirOwn) {
  WatermarkWindow window(Options({BackfillView{kStore, kView, "public.items", true},
                                  BackfillView{"search", "other_search", "public.other", true}}));
  auto items = std::make_shared<BackfillJob>();
  items->id = 1;
  items->store = kStore;
  items->table = "public.items";
  items->views = {kView};
  items->columns = ColumnsOf(*Items());
  auto other = std::make_shared<BackfillJob>();
  other->id = 2;
  other->store = "search";
  other->table = "public.other";
  other->views = {"other_search"};
  other->columns = ColumnsOf(*Other());
  window.AddRunning(items);
  window.AddRunning(other);

  BeginAndReadKeys(window, 10, items, 0, {"1", "2", "3"});
  BeginAndReadKeys(window, 20, other, 0, {"1", "2", "3"}, Other());
  Mark(window, At(0x100), window.Message("low", 10));
  Insert(window, At(0x110), Other(), {Text("3"), Text("o3")});  // before other's L
  Mark(window, At(0x120), window.Message("low", 20));
  Update(window, At(0x130), {Text("1"), Text("a1")});           // items 1: both open
  Insert(window, At(0x140), Other(), {Text("2"), Text("o2")});  // other 2
  const Fed high_other = Mark(window, At(0x150), window.Message("high", 20));
  // Items' second chunk opens while its first awaits H; other's job has no chunk open.
  Insert(window, At(0x160), Other(), {Text("1"), Text("o1")});
  Delete(window, At(0x170), "3");
  const Fed high_items = Mark(window, At(0x180), window.Message("high", 10));
  BeginAndReadKeys(window, 11, items, 10, {"4"});
  Mark(window, At(0x190), window.Message("low", 11));
  Update(window, At(0x1a0), {Text("4"), Text("d4")});
  const Fed high_items2 = Mark(window, At(0x1b0), window.Message("high", 11));

  EXPECT_EQ(Render(high_other.out),
            (std::vector<std::string>{
                "0/150#1 row search/other_search (1,v1)",
                "0/150#2 row search/other_search (3,v3)",
                "0/150#3 state search/other_search backfilling after=[\"3\"] oid=16400 " +
                    std::string(kColumns),
            }));
  EXPECT_EQ(Render(high_items.out),
            (std::vector<std::string>{
                "0/180#1 row cache/items_cache (2,v2)",
                "0/180#2 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
  EXPECT_EQ(Render(high_items2.out),
            (std::vector<std::string>{
                "0/1B0#1 state cache/items_cache backfilling after=[\"4\"] oid=16384 " +
                    std::string(kColumns),
            }));
  for (uint64_t id : {10, 11, 20}) EXPECT_EQ(window.EndChunk(id).verdict, Verdict::kDone);

  // Each job's "done" marks its own views live; one no longer running is tried again.
  window.BeginDone(2);
  window.BeginDone(1);
  window.RemoveRunning(1);
  const Fed done_other = Mark(window, At(0x200), window.Message("done", 2));
  const Fed done_items = Mark(window, At(0x210), window.Message("done", 1));
  EXPECT_EQ(Render(done_other.out),
            (std::vector<std::string>{"0/200#0 state search/other_search live oid=0 " +
                                      std::string(kColumns)}));
  EXPECT_TRUE(done_items.out.empty());
  EXPECT_EQ(window.EndDone(2).first, Verdict::kDone);
  EXPECT_EQ(window.EndDone(1).first, Verdict::kRetry);
}

// The verify window: a chunk read to be compared, never placed; its window stays open
// from L to "checked" (written once the store was read, after its checkpoint passed H).
class VerifyWindowTest : public WatermarkWindowTest {
 protected:
  // A verification of kView (a job the window does not run: nothing is placed).
  std::shared_ptr<BackfillJob> VerifyJob() {
    auto job = std::make_shared<BackfillJob>();
    job->store = kStore;
    job->table = "public.items";
    job->views = {kView};
    return job;
  }
  void BeginAndRead(uint64_t id) {
    window_.BeginVerify(id, VerifyJob(), Items(), {"k"});
    window_.ChunkRead(id, {{"1", "a"}, {"2", "b"}, {"3", "c"}});
  }
  static std::vector<std::string> Keys(const ChunkRows& rows) {
    std::vector<std::string> keys;
    for (const auto& row : rows) keys.push_back(row[0].value_or("null"));
    return keys;
  }
};

TEST_F(VerifyWindowTest, NothingIsPlacedAndEveryUnchangedRowIsComparableAtChecked) {
  BeginAndRead(4);
  EXPECT_TRUE(Mark(window_, At(0x100), window_.Message("low", 4)).out.empty());
  const Fed high = Mark(window_, At(0x200), window_.Message("high", 4));
  EXPECT_TRUE(high.out.empty());
  EXPECT_TRUE(high.events.decided);
  // At H the driver waits for the store's checkpoint (kDone), then reads the store.
  EXPECT_EQ(window_.ChunkVerdict(4), Verdict::kDone);
  EXPECT_EQ(window_.VerifyVerdict(4), Verdict::kPending);
  const Fed checked = Mark(window_, At(0x300), window_.Message("checked", 4));
  EXPECT_TRUE(checked.out.empty());
  EXPECT_TRUE(checked.events.decided);
  EXPECT_EQ(window_.VerifyVerdict(4), Verdict::kDone);

  const WatermarkWindow::VerifyOutcome outcome = window_.EndVerify(4);
  EXPECT_EQ(outcome.verdict, Verdict::kDone);
  EXPECT_EQ(outcome.watermark, At(0x200));
  EXPECT_EQ(outcome.checked, At(0x300));
  EXPECT_EQ(Keys(outcome.comparable), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(outcome.comparable[1], (std::vector<std::optional<std::string>>{"2", "b"}));
  EXPECT_TRUE(outcome.changed.empty());
  EXPECT_EQ(outcome.rows, 3u);
  EXPECT_EQ(outcome.last, "[\"3\"]");
  EXPECT_EQ(window_.chunks_in_flight(), 0u);
}

TEST_F(VerifyWindowTest, KeysChangedBetweenLAndCheckedAreNotCompared) {
  BeginAndRead(1);
  Update(window_, At(0x090), {Text("3"), Text("c0")});  // before L: read after it
  Mark(window_, At(0x100), window_.Message("low", 1));
  Update(window_, At(0x110), {Text("1"), Text("a2")});  // between L and H
  Mark(window_, At(0x200), window_.Message("high", 1));
  // Between H and checked: the store may have applied it before it was read.
  Delete(window_, At(0x210), "2");
  Insert(window_, At(0x220), Items(), {Text("7"), Text("new")});  // not a row read
  Insert(window_, At(0x230), Other(), {Text("3"), Text("x")});    // another table
  Mark(window_, At(0x300), window_.Message("checked", 1));
  // After checked: the store was read before it.
  Update(window_, At(0x310), {Text("3"), Text("c3")});

  const WatermarkWindow::VerifyOutcome outcome = window_.EndVerify(1);
  EXPECT_EQ(outcome.verdict, Verdict::kDone);
  EXPECT_EQ(Keys(outcome.comparable), (std::vector<std::string>{"3"}));
  EXPECT_EQ(outcome.changed, (std::set<std::string>{"[\"1\"]", "[\"2\"]", "[\"7\"]"}));
  EXPECT_EQ(outcome.rows, 3u);
}

TEST_F(VerifyWindowTest, ATruncateOrAnUnreadableKeyBeforeCheckedHasItReadAgain) {
  BeginAndRead(1);
  Mark(window_, At(0x100), window_.Message("low", 1));
  Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_EQ(window_.ChunkVerdict(1), Verdict::kDone);
  Truncate(window_, At(0x210), {Items()});
  EXPECT_EQ(window_.VerifyVerdict(1), Verdict::kRetry);
  Mark(window_, At(0x300), window_.Message("checked", 1));
  EXPECT_EQ(window_.VerifyVerdict(1), Verdict::kRetry);
  const WatermarkWindow::VerifyOutcome outcome = window_.EndVerify(1);
  EXPECT_EQ(outcome.verdict, Verdict::kRetry);
  EXPECT_TRUE(outcome.comparable.empty());

  BeginAndRead(2);
  Mark(window_, At(0x400), window_.Message("low", 2));
  Mark(window_, At(0x500), window_.Message("high", 2));
  Update(window_, At(0x510), {kUnchanged, Text("x")});  // no key to read
  Mark(window_, At(0x600), window_.Message("checked", 2));
  EXPECT_EQ(window_.EndVerify(2).verdict, Verdict::kRetry);
}

TEST_F(VerifyWindowTest, ASpoiledOrIncompleteWindowIsReadAgainAtH) {
  // Its L never met (written by another run): read again at H, as a fill's.
  window_.BeginVerify(1, VerifyJob(), Items(), {"k"});
  window_.ChunkRead(1, {{"1", "a"}});
  Mark(window_, At(0x200), window_.Message("high", 1));
  EXPECT_EQ(window_.ChunkVerdict(1), Verdict::kRetry);
  EXPECT_EQ(window_.VerifyVerdict(1), Verdict::kRetry);
  // A "checked" without a kDone H closes nothing.
  Mark(window_, At(0x300), window_.Message("checked", 1));
  EXPECT_EQ(window_.EndVerify(1).verdict, Verdict::kRetry);

  // A truncate between L and H.
  BeginAndRead(2);
  Mark(window_, At(0x400), window_.Message("low", 2));
  Truncate(window_, At(0x410), {Items()});
  Mark(window_, At(0x500), window_.Message("high", 2));
  EXPECT_EQ(window_.ChunkVerdict(2), Verdict::kRetry);
  EXPECT_EQ(window_.EndVerify(2).verdict, Verdict::kRetry);
}

TEST_F(VerifyWindowTest, AStreamRestartBeforeCheckedHasItReadAgainAfterItNot) {
  BeginAndRead(1);
  BeginAndRead(2);
  Mark(window_, At(0x100), window_.Message("low", 1));
  Mark(window_, At(0x110), window_.Message("low", 2));
  Mark(window_, At(0x200), window_.Message("high", 1));
  Mark(window_, At(0x210), window_.Message("high", 2));
  Mark(window_, At(0x300), window_.Message("checked", 2));
  window_.OnStreamRestart();
  // Chunk 1 is between H and checked: what the stream meets next may not be all.
  Mark(window_, At(0x400), window_.Message("checked", 1));
  EXPECT_EQ(window_.VerifyVerdict(1), Verdict::kRetry);
  EXPECT_EQ(window_.EndVerify(1).verdict, Verdict::kRetry);
  // Chunk 2 was checked before the restart: its outcome stands.
  EXPECT_EQ(window_.VerifyVerdict(2), Verdict::kDone);
  EXPECT_EQ(Keys(window_.EndVerify(2).comparable), (std::vector<std::string>{"1", "2", "3"}));
}

TEST_F(VerifyWindowTest, AVerifyChunkBesideAFillChunkLeavesTheFillAsItWas) {
  auto job = RunningJob();
  WatermarkWindowTest::BeginAndRead(1, job);
  BeginAndRead(2);
  Mark(window_, At(0x100), window_.Message("low", 1));
  Mark(window_, At(0x110), window_.Message("low", 2));
  Update(window_, At(0x120), {Text("2"), Text("b2")});
  const Fed fill_high = Mark(window_, At(0x200), window_.Message("high", 1));
  const Fed verify_high = Mark(window_, At(0x210), window_.Message("high", 2));
  EXPECT_EQ(Render(fill_high.out),
            (std::vector<std::string>{
                "0/200#1 row cache/items_cache (1,a)",
                "0/200#2 row cache/items_cache (3,c)",
                "0/200#3 state cache/items_cache backfilling after=[\"3\"] oid=16384 " +
                    std::string(kColumns),
            }));
  EXPECT_TRUE(verify_high.out.empty());
  // The fill's window closed at its H; the verify window is still open.
  Update(window_, At(0x220), {Text("3"), Text("c2")});
  Mark(window_, At(0x300), window_.Message("checked", 2));
  EXPECT_EQ(window_.EndChunk(1).verdict, Verdict::kDone);
  EXPECT_EQ(Keys(window_.EndVerify(2).comparable), (std::vector<std::string>{"1"}));
}

}  // namespace
}  // namespace pgderive
