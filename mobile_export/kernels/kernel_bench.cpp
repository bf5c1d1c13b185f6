// bidrn_kernel_bench: times binary conv layers on one core, against that core's popcount ceiling.
//
//   bidrn_kernel_bench [--layers ref3x3_256_28,dabnn3x3_128_28 | all] [--shape [NAME=]N,C,H,W,O,K,S,P]...
//                      [--path NAME | all] [--seconds S] [--cpu N] [--json]
//
// Stand-alone (no ExecuTorch, no Python): the aarch64 build is one static binary to push to a phone
// (`bidrn bench phone` builds it, pushes it with adb and reads its --json; docs/kernels.md, "On a phone").
// Each layer is a float-in, float-out binary conv (sign-pack, count, y = scale * acc + bias) run by the C
// API on the calling thread, after two untimed calls, in rounds for --seconds: each round measures the
// path's ceiling (its count in a register-only loop, bidrn_probe_count_ceiling), then times 25 ms of calls.
// The layer's binary MACs per ns over the round's ceiling is its fraction of the ceiling, the median over
// the rounds reported (PERFORMANCE.md's phone target: at least 70 %; daBNN's 28 x 28 x 128 layer reached
// 66 % on a Pixel 1). Both rates are per ns, so the fraction holds whatever clock the core runs at in a round.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bconv.h"

namespace {

struct Layer {
  std::string name;
  int64_t n, c, h, w, o, k, s, p;
  int64_t out_h() const { return (h + 2 * p - k) / s + 1; }
  int64_t out_w() const { return (w + 2 * p - k) / s + 1; }
  int64_t macs() const { return n * o * out_h() * out_w() * c * k * k; }
};

// The spec's reference layer (PERFORMANCE.md) and the layer daBNN published (0.95 ms on a Pixel 1).
const Layer kPresets[] = {
    {"ref3x3_256_28", 1, 256, 28, 28, 256, 3, 1, 1},
    {"dabnn3x3_128_28", 1, 128, 28, 28, 128, 3, 1, 1},
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "bidrn_kernel_bench: %s\n"
               "usage: bidrn_kernel_bench [--layers NAME,...|all] [--shape [NAME=]N,C,H,W,O,K,S,P]... [--path NAME|all]\n"
               "                          [--seconds S] [--cpu N] [--json]\n"
               "layers: ref3x3_256_28, dabnn3x3_128_28; paths on this CPU: %s\n",
               why.c_str(), bidrn_kernels_supported_paths());
  std::exit(2);
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, sep);)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

// [NAME=]N,C,H,W,O,K,S,P
Layer parse_shape(std::string text) {
  std::string name;
  if (const size_t eq = text.find('='); eq != std::string::npos) name = text.substr(0, eq), text = text.substr(eq + 1);
  const std::vector<std::string> v = split(text, ',');
  if (v.size() != 8) usage("--shape takes 8 integers N,C,H,W,O,K,S,P (after an optional NAME=), got '" + text + "'");
  int64_t x[8];
  for (int i = 0; i < 8; ++i) {
    char* end = nullptr;
    x[i] = std::strtoll(v[i].c_str(), &end, 10);
    if (*end || x[i] < (i == 7 ? 0 : 1))
      usage("--shape: '" + v[i] + "' is not a " + (i == 7 ? "non-negative" : "positive") + " integer");
  }
  Layer l{name.empty() ? "conv_" + text : name, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]};
  if (l.out_h() < 1 || l.out_w() < 1) usage("--shape " + text + " has no output pixels");
  return l;
}

// The core this thread runs on, in words: Arm's MIDR part number where the kernel exposes it (Android does,
// in sysfs or /proc/cpuinfo), else the x86 model name.
std::string core_name(int cpu) {
  static const struct {
    unsigned part;
    const char* name;
  } kArmParts[] = {{0xd03, "Cortex-A53"}, {0xd04, "Cortex-A35"}, {0xd05, "Cortex-A55"}, {0xd07, "Cortex-A57"},
                   {0xd08, "Cortex-A72"}, {0xd09, "Cortex-A73"}, {0xd0a, "Cortex-A75"}, {0xd0b, "Cortex-A76"},
                   {0xd0d, "Cortex-A77"}, {0xd41, "Cortex-A78"}, {0xd44, "Cortex-X1"}, {0xd46, "Cortex-A510"},
                   {0xd47, "Cortex-A710"}, {0xd48, "Cortex-X2"}, {0xd4d, "Cortex-A715"}, {0xd4e, "Cortex-X3"},
                   {0xd80, "Cortex-A520"}, {0xd81, "Cortex-A720"}, {0xd82, "Cortex-X4"}, {0xd85, "Cortex-X925"},
                   {0xd87, "Cortex-A725"}};
  unsigned long long midr = 0;
  std::ifstream sys("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/regs/identification/midr_el1");
  std::string text;
  if (sys >> text) midr = std::strtoull(text.c_str(), nullptr, 16);
  std::ifstream info("/proc/cpuinfo");
  int current = -1;
  unsigned implementer = 0, part = 0;
  std::string model;
  for (std::string line; std::getline(info, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    key.erase(key.find_last_not_of(" \t") + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key == "processor") current = std::atoi(value.c_str());
    if (current != cpu) continue;
    if (key == "CPU implementer") implementer = unsigned(std::strtoul(value.c_str(), nullptr, 0));
    if (key == "CPU part") part = unsigned(std::strtoul(value.c_str(), nullptr, 0));
    if (key == "model name" && model.empty()) model = value;
  }
  if (midr) implementer = unsigned(midr >> 24) & 0xff, part = unsigned(midr >> 4) & 0xfff;
  if (implementer || part) {
    char buf[96];
    const char* name = nullptr;
    if (implementer == 0x41)
      for (const auto& p : kArmParts)
        if (p.part == part) name = p.name;
    std::snprintf(buf, sizeof buf, "%s (implementer 0x%02x, part 0x%03x)", name ? name : "Arm core", implementer,
                  part);
    return buf;
  }
  return model.empty() ? "unknown" : model;
}

std::string join(const std::vector<int>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out + "\"";
}

struct Result {
  Layer layer;
  double median_ms, min_ms;
  double ceiling;   // binary MACs per ns, median over the rounds
  double fraction;  // median over the rounds of (the round's MACs per ns) / (the round's ceiling)
  int runs, rounds;
  std::string counted_on;
  std::vector<int> cpus;  // the CPUs the rounds ran on (sampled at each round's start and end)  // the path whose count ceiling applies (`amx` hands what the tile unit does not take to avx512)
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Rounds of: the ceiling (register-only count loop, about 0.3 ms), then the layer's calls for 25 ms (at least
// one). A round's ceiling and calls share the same minute of a shared or throttling core, so the fraction is
// taken round by round.
constexpr int64_t kCeilingSteps = 20000;
constexpr double kRoundMs = 25.0;

Result time_layer(const Layer& l, const char* path, double seconds, std::mt19937_64& rng) {
  const int64_t cw = (l.c + 63) / 64, oh = l.out_h(), ow = l.out_w();
  std::vector<float> x(size_t(l.n * l.c * l.h * l.w)), out(size_t(l.n * l.o * oh * ow)), scale(size_t(l.o)),
      bias(size_t(l.o));
  std::vector<uint64_t> weight(size_t(l.o * l.k * l.k * cw));
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : x) v = uniform(rng);
  for (uint64_t& v : weight) v = rng();
  if (l.c % 64)  // the packed words' padding bits are 0
    for (size_t i = cw - 1; i < weight.size(); i += size_t(cw)) weight[i] &= (uint64_t{1} << (l.c % 64)) - 1;
  for (int64_t i = 0; i < l.o; ++i) scale[size_t(i)] = 0.01f * float(i % 7 + 1), bias[size_t(i)] = 0.1f * float(i % 5);
  const int64_t shape[13] = {l.n, l.c, l.h, l.w, l.o, oh, ow, l.k, l.k, l.s, l.s, l.p, l.p};
  auto call = [&] {
    if (const char* err = bidrn_binary_conv(shape, 0, x.data(), nullptr, weight.data(), scale.data(), bias.data(),
                                            nullptr, 0, out.data()))
      usage(l.name + ": " + err);
  };
  const std::string counted_on =
      std::string(path) == "amx" && !bidrn_kernels_amx_takes(shape, 0) ? std::string("avx512") : std::string(path);
  call(), call();
  std::vector<double> times, ceilings, fractions;
  std::vector<int> cpus;
  auto saw_cpu = [&cpus] {
    const int c = sched_getcpu();
    if (std::find(cpus.begin(), cpus.end(), c) == cpus.end()) cpus.push_back(c);
  };
  const auto start = std::chrono::steady_clock::now();
  while (fractions.size() < 3 || ms_since(start) < 1000.0 * seconds) {
    saw_cpu();
    const double ceiling = bidrn_probe_count_ceiling(counted_on.c_str(), kCeilingSteps);
    std::vector<double> round;
    const auto round_start = std::chrono::steady_clock::now();
    while (round.empty() || ms_since(round_start) < kRoundMs) {
      const auto t0 = std::chrono::steady_clock::now();
      call();
      round.push_back(ms_since(t0));
    }
    saw_cpu();
    times.insert(times.end(), round.begin(), round.end());
    ceilings.push_back(ceiling);
    fractions.push_back(ceiling > 0 ? double(l.macs()) / (median(round) * 1e6) / ceiling : 0.0);
  }
  return {l, median(times), *std::min_element(times.begin(), times.end()), median(ceilings), median(fractions),
          int(times.size()), int(fractions.size()), counted_on, cpus};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Layer> layers;
  std::string path_arg;
  double seconds = 2.0;
  int cpu = -1;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") {
      json = true;
    } else if (a == "--layers") {
      for (const std::string& name : split(value(), ',')) {
        bool found = false;
        for (const Layer& p : kPresets)
          if (name == "all" || name == p.name) layers.push_back(p), found = true;
        if (!found) usage("no layer named '" + name + "'");
      }
    } else if (a == "--shape") {
      layers.push_back(parse_shape(value()));
    } else if (a == "--path") {
      path_arg = value();
    } else if (a == "--seconds") {
      const std::string v = value();
      char* end = nullptr;
      seconds = std::strtod(v.c_str(), &end);
      if (*end || !(seconds > 0)) usage("--seconds takes a positive number, got '" + v + "'");
    } else if (a == "--cpu") {
      const std::string v = value();
      char* end = nullptr;
      cpu = int(std::strtol(v.c_str(), &end, 10));
      if (*end || cpu < 0 || cpu >= CPU_SETSIZE) usage("--cpu takes a CPU number, got '" + v + "'");
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0)
        usage("cannot run on CPU " + v + " (sched_setaffinity refused; `nproc` CPUs: " +
              std::to_string(sysconf(_SC_NPROCESSORS_CONF)) + ")");
    } else {
      usage("unknown argument '" + a + "'");
    }
  }
  if (layers.empty()) layers.push_back(kPresets[0]);
  std::vector<std::string> paths;
  if (path_arg.empty()) {
    paths.push_back(bidrn_kernels_active_path());
  } else if (path_arg == "all") {
    paths = split(bidrn_kernels_supported_paths(), ',');
  } else {
    if (!bidrn_kernels_set_path(path_arg.c_str()))
      usage("path '" + path_arg + "' is not available here (this CPU: " + bidrn_kernels_supported_paths() + ")");
    paths.push_back(path_arg);
  }
  const int on_cpu = cpu >= 0 ? cpu : sched_getcpu();
  const std::string core = core_name(on_cpu);
  const double ghz = bidrn_probe_clock_ghz(2000000);

  std::mt19937_64 rng(20261206);
  std::vector<std::pair<std::string, std::vector<Result>>> all;
  for (const std::string& path : paths) {
    bidrn_kernels_set_path(path.c_str());
    std::vector<Result> results;
    for (const Layer& l : layers) results.push_back(time_layer(l, path.c_str(), seconds, rng));
    all.emplace_back(path, results);
  }
  const double ghz_after = bidrn_probe_clock_ghz(2000000);

  if (json) {
    std::printf("{\"cpu\": %d, \"core\": %s, \"clock_ghz\": [%.4f, %.4f], \"supported_paths\": \"%s\", "
                "\"paths\": [", on_cpu, json_string(core).c_str(), ghz, ghz_after, bidrn_kernels_supported_paths());
    for (size_t i = 0; i < all.size(); ++i) {
      std::printf("%s{\"path\": \"%s\", \"layers\": [", i ? ", " : "", all[i].first.c_str());
      for (size_t j = 0; j < all[i].second.size(); ++j) {
        const Result& r = all[i].second[j];
        std::printf("%s{\"name\": %s, \"shape\": [%lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld], "
                    "\"macs\": %lld, \"runs\": %d, \"rounds\": %d, \"median_ms\": %.6f, \"min_ms\": %.6f, "
                    "\"ceiling_path\": \"%s\", \"ceiling_macs_per_ns\": %.4f, \"fraction_of_ceiling\": %.5f, "
                    "\"cpus\": [%s]}",
                    j ? ", " : "", json_string(r.layer.name).c_str(), (long long)r.layer.n, (long long)r.layer.c,
                    (long long)r.layer.h, (long long)r.layer.w, (long long)r.layer.o, (long long)r.layer.k,
                    (long long)r.layer.s, (long long)r.layer.p, (long long)r.layer.macs(), r.runs, r.rounds,
                    r.median_ms, r.min_ms, r.counted_on.c_str(), r.ceiling, r.fraction, join(r.cpus).c_str());
      }
      std::printf("]}");
    }
    std::printf("]}\n");
    return 0;
  }
  std::printf("core: CPU %d, %s; clock %.2f GHz before, %.2f after (a chain of dependent adds)\n", on_cpu,
              core.c_str(), ghz, ghz_after);
  std::printf("%-20s %-13s %9s %10s %9s %9s %12s %11s\n", "layer", "path", "M MACs", "median ms", "min ms",
              "MACs/ns", "ceiling/ns", "of ceiling");
  for (const auto& [path, results] : all)
    for (const Result& r : results) {
      const double rate = double(r.layer.macs()) / (r.median_ms * 1e6);
      const std::string shown = r.counted_on == path ? path : path + ">" + r.counted_on;
      std::printf("%-20s %-13s %9.1f %10.3f %9.3f %9.1f %12.1f %10.1f%%\n", r.layer.name.c_str(), shown.c_str(),
                  double(r.layer.macs()) / 1e6, r.median_ms, r.min_ms, rate, r.ceiling, 100.0 * r.fraction);
    }
  for (const auto& [path, results] : all)
    for (const Result& r : results)
      if (r.cpus.size() > 1)
        std::printf("%s on %s moved between CPUs %s: pin it with --cpu N for one core's figures\n",
                    r.layer.name.c_str(), path.c_str(), join(r.cpus).c_str());
  std::printf("(MACs/ns by the median call; ceiling: the path's count in a register-only loop, median of the rounds;\n"
              " of ceiling: median of the rounds' ratios, each round a ceiling loop and 25 ms of calls; per ns / %.2f GHz"
              " = per cycle)\n", ghz);
  return 0;
}
