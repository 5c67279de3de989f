// The threads of one sharded layer call (csrc/batch_shards.h) as a team whose idle threads take
// part in the running shards' GEMMs. The shards are equal in work, but a VM's vCPUs run at speeds
// that differ from call to call: at T128-B64-H512 forward the two shards ended up to 60 ms apart
// in a 330 ms call, either one first, and the thread done first spun in OpenMP's barrier
// (docs/cpu.md, "The shards' end"). In a team that thread takes units (column panels, blocks of
// rows) of the other shards' GEMMs instead, a few at a time, while the shard's own thread takes
// the rest.
//
// for_units is the one place a shard's work is offered: a GEMM of a few dozen rows split by
// units whose results do not depend on which thread computes them or on how the units are
// grouped, so a call gives the same numbers whoever helps. Nothing else of a shard runs on
// another thread.
#pragma once

#include <c10/util/FunctionRef.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace nrnm {

class ShardTeam {
 public:
  explicit ShardTeam(int64_t shards);
  ~ShardTeam();
  ShardTeam(const ShardTeam&) = delete;
  ShardTeam& operator=(const ShardTeam&) = delete;

  // Runs shard i (0 <= i < shards) on this thread: work(), during which for_units on this thread
  // may offer units to the team's idle threads.
  void run_shard(int64_t i, c10::function_ref<void()> work);

  // Takes units offered by the shards that run on other threads until no shard runs. A thread
  // calls it after its last shard; a shard not yet started is not waited for (a thread pool may
  // run it later on this very thread).
  void help();

  // Threads in help() now.
  int64_t idle_threads() const { return idle_.load(std::memory_order_relaxed); }

  // Offers units [0, units) of shard `shard`'s f (for_units) and runs those no helper takes.
  void share(int64_t shard, int64_t units, int64_t grain, c10::function_ref<void(int64_t, int64_t)> f);

 private:
  struct Offer;
  const int64_t shards_;
  std::unique_ptr<Offer[]> offers_;  // one per shard
  std::atomic<int64_t> running_{0};  // shards in run_shard now
  std::atomic<int64_t> idle_{0};
};

// Units of work smaller than this many multiply-adds a claim are grouped: a claim moves a cache
// line between cores (a few hundred ns), 2^18 multiply-adds take about 1.2 us at a core's FMA
// peak. set_min_shared_work overrides it for the process (tests: 1 shares every GEMM of two
// units or more); it must not change while a layer call runs.
int64_t min_shared_work();
void set_min_shared_work(int64_t multiply_adds);

// Units that a thread ran for another thread's shard since the process started (tests,
// diagnostics).
int64_t units_helped();

// f(u0, u1) over [0, units), each unit in exactly one call, unit_work multiply-adds a unit. On
// a thread running a ShardTeam's shard, with a thread of that team in help() and at least two
// claims' worth of work, the team's idle threads run some of the calls concurrently with this
// one; elsewhere this is f(0, units). f must touch only raw memory (a helper runs it without
// this thread's ATen state), not throw, and give each unit the same result in any call.
void for_units(int64_t units, int64_t unit_work, c10::function_ref<void(int64_t, int64_t)> f);

}  // namespace nrnm
