#include "shard_team.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace nrnm {
namespace {

void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

std::atomic<int64_t> g_min_shared_work{int64_t(1) << 18};
std::atomic<int64_t> g_units_helped{0};

// The team and shard of this thread's run_shard, if any.
thread_local ShardTeam* t_team = nullptr;
thread_local int64_t t_shard = -1;

}  // namespace

// One shard's offer: claims packs (claims offered << 32) | next claim, so that one atomic add
// both takes a claim and says whether it is one of the offer now published (0 offered: none).
// The poster writes f, units and grain before publishing and changes them only once every
// claim is done, so a helper reads them after its claim.
struct alignas(64) ShardTeam::Offer {
  std::atomic<uint64_t> claims{0};
  std::atomic<int64_t> done{0};  // claims that helpers finished
  const c10::function_ref<void(int64_t, int64_t)>* f = nullptr;
  int64_t units = 0, grain = 1;

  static int64_t offered(uint64_t v) { return static_cast<int64_t>(v >> 32); }
  static int64_t next(uint64_t v) { return static_cast<int64_t>(v & 0xffffffffu); }

  // Takes and runs a claim if one is left: its units, 0 if none.
  int64_t take() {
    const uint64_t seen = claims.load(std::memory_order_relaxed);
    if (next(seen) >= offered(seen)) return 0;
    const uint64_t v = claims.fetch_add(1, std::memory_order_acq_rel);
    if (next(v) >= offered(v)) return 0;
    const int64_t u0 = next(v) * grain, u1 = std::min(units, u0 + grain);
    (*f)(u0, u1);
    return u1 - u0;
  }
};

ShardTeam::ShardTeam(int64_t shards) : shards_(shards), offers_(new Offer[shards]) {
  TORCH_CHECK(shards >= 1, "nrnm_fast: a shard team needs at least one shard, got ", shards);
}

ShardTeam::~ShardTeam() = default;

void ShardTeam::run_shard(int64_t i, c10::function_ref<void()> work) {
  TORCH_CHECK(i >= 0 && i < shards_, "nrnm_fast: shard ", i, " of a team of ", shards_);
  struct Running {  // also when work() throws: a helper leaves once no shard runs
    ShardTeam* team;
    ShardTeam* outer_team;
    int64_t outer_shard;
    Running(ShardTeam* t, int64_t shard) : team(t), outer_team(t_team), outer_shard(t_shard) {
      team->running_.fetch_add(1, std::memory_order_acq_rel);
      t_team = team;
      t_shard = shard;
    }
    ~Running() {
      t_team = outer_team;
      t_shard = outer_shard;
      team->running_.fetch_sub(1, std::memory_order_acq_rel);
    }
  } running(this, i);
  work();
}

void ShardTeam::help() {
  // Spinning keeps a claim a cache line's trip away; after some 4096 pauses (tens of us) without
  // one, each round yields the core to what else the OS has for it (more threads than cores).
  constexpr int kPausesBeforeYield = 1 << 12;
  int idle_rounds = 0;
  idle_.fetch_add(1, std::memory_order_relaxed);
  while (running_.load(std::memory_order_acquire) > 0) {
    bool took = false;
    for (int64_t i = 0; i < shards_; ++i) {
      Offer& o = offers_[i];
      if (const int64_t units = o.take()) {
        took = true;
        g_units_helped.fetch_add(units, std::memory_order_relaxed);
        o.done.fetch_add(1, std::memory_order_release);
      }
    }
    if (took) {
      idle_rounds = 0;
    } else if (++idle_rounds < kPausesBeforeYield) {
      spin_pause();
    } else {
      std::this_thread::yield();
    }
  }
  idle_.fetch_sub(1, std::memory_order_relaxed);
}

void ShardTeam::share(int64_t shard, int64_t units, int64_t grain,
                      c10::function_ref<void(int64_t, int64_t)> f) {
  Offer& o = offers_[shard];
  const int64_t claims = (units + grain - 1) / grain;
  TORCH_CHECK(claims < (int64_t(1) << 31), "nrnm_fast: ", claims, " claims in one offer");
  o.f = &f;
  o.units = units;
  o.grain = grain;
  o.done.store(0, std::memory_order_relaxed);
  o.claims.store(static_cast<uint64_t>(claims) << 32, std::memory_order_release);
  int64_t mine = 0;  // claims this thread ran
  while (o.take() > 0) ++mine;
  while (o.done.load(std::memory_order_acquire) < claims - mine) spin_pause();
  o.claims.store(0, std::memory_order_relaxed);
}

int64_t min_shared_work() { return g_min_shared_work.load(std::memory_order_relaxed); }

void set_min_shared_work(int64_t multiply_adds) {
  TORCH_CHECK(multiply_adds >= 1, "nrnm_fast: min_shared_work must be >= 1, got ", multiply_adds);
  g_min_shared_work.store(multiply_adds, std::memory_order_relaxed);
}

int64_t units_helped() { return g_units_helped.load(std::memory_order_relaxed); }

void for_units(int64_t units, int64_t unit_work, c10::function_ref<void(int64_t, int64_t)> f) {
  if (units <= 0) return;
  ShardTeam* team = t_team;
  const int64_t min_work = min_shared_work();
  const int64_t grain = std::max<int64_t>(1, (min_work + unit_work - 1) / std::max<int64_t>(unit_work, 1));
  if (team == nullptr || units < 2 * grain || team->idle_threads() == 0) {
    f(0, units);
    return;
  }
  team->share(t_shard, units, grain, f);
}

}  // namespace nrnm
