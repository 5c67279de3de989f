// ctest: csrc/shard_team.h. Outside a team for_units is one call over every unit; in a team of
// two shards on two threads, where the thread of shard 0 is done and helps, every unit of each
// offered range runs exactly once, the helper runs some of them, and both threads return once
// no shard runs; help() on a team with no shard running returns at once.

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "../shard_team.h"

namespace {

// Work enough for a unit that the helper takes some while the shard's own thread runs others.
double busy(int64_t u) {
  double s = 0;
  for (int64_t i = 0; i < 2000; ++i) s += static_cast<double>((u + i) % 7);
  return s;
}

}  // namespace

int main() {
  bool ok = true;
  nrnm::set_min_shared_work(1);

  int64_t calls = 0, first = -1, last = -1;
  nrnm::for_units(100, 1, [&](int64_t u0, int64_t u1) { ++calls, first = u0, last = u1; });
  if (calls != 1 || first != 0 || last != 100) {
    std::printf("FAIL outside a team: %lld calls, last over %lld..%lld\n", (long long)calls, (long long)first,
                (long long)last);
    ok = false;
  }

  constexpr int64_t kUnits = 997, kRounds = 40;
  std::vector<std::atomic<int64_t>> runs(kUnits);
  for (auto& r : runs) r.store(0);
  std::atomic<int64_t> by_helper{0};
  std::atomic<double> sink{0};
  const int64_t helped_before = nrnm::units_helped();
  nrnm::ShardTeam team(2);
  std::thread helper;
  team.run_shard(1, [&] {
    // started inside shard 1, so that its help() finds a shard running
    helper = std::thread([&] {
      team.run_shard(0, [] {});
      team.help();
    });
    while (team.idle_threads() == 0) std::this_thread::yield();
    const std::thread::id own = std::this_thread::get_id();
    for (int64_t round = 0; round < kRounds; ++round)
      nrnm::for_units(kUnits, 1, [&](int64_t u0, int64_t u1) {
        double s = 0;
        for (int64_t u = u0; u < u1; ++u) runs[u].fetch_add(1), s += busy(u);
        sink.store(s);
        if (std::this_thread::get_id() != own) by_helper.fetch_add(u1 - u0);
      });
  });
  team.help();
  helper.join();
  for (int64_t u = 0; u < kUnits; ++u)
    if (runs[u].load() != kRounds) {
      std::printf("FAIL unit %lld ran %lld times in %lld rounds\n", (long long)u, (long long)runs[u].load(),
                  (long long)kRounds);
      ok = false;
      break;
    }
  const int64_t counted = nrnm::units_helped() - helped_before;
  if (by_helper.load() == 0 || counted != by_helper.load()) {
    std::printf("FAIL the helper ran %lld units, units_helped counted %lld\n", (long long)by_helper.load(),
                (long long)counted);
    ok = false;
  }
  std::printf("helper ran %lld of %lld units\n", (long long)by_helper.load(), (long long)(kUnits * kRounds));

  nrnm::ShardTeam idle(3);
  idle.help();  // no shard runs: returns

  std::printf(ok ? "PASS\n" : "FAIL\n");
  return ok ? 0 : 1;
}
