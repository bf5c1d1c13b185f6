// bidrn_pte_runner: runs an exported .pte in ExecuTorch's C++ runtime, no Python: the bidrn:: ops linked in
// (bidrn_et_kernels_static, whole), XNNPACK and the optimized / portable kernels from the runtime's shared
// libraries. What an app on a phone does, as a command:
//
//   bidrn_pte_runner PROGRAM.pte [--input FILE.f32] [--seed S] [--warmup N] [--runs N] [--threads N]
//                    [--outputs FILE] [--method NAME]
//
// The input (one float tensor, the image) is FILE's raw float32 values, or uniform [0, 1) from --seed; the
// program runs --warmup untimed and --runs timed executes; stdout gets one JSON object: each execute's
// milliseconds, the process's peak resident memory (VmHWM), the bidrn kernel path dispatched on this CPU, the
// threadpool's size as the ops see it and the outputs' shapes. --outputs writes every
// tensor output (dtype code, rank, sizes, raw bytes: mobile_export/runner.py reads it). `bidrn bench runner`
// builds it for this machine or for aarch64 (run under qemu-aarch64 with the aarch64 ExecuTorch wheel's
// runtime) and compares its outputs with the Python runtime's (docs/export.md, "The C++ runner").
#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

// libexecutorch_threadpool's pool (the wheel ships no threadpool.h): the two calls this runner makes.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

extern "C" const char* bidrn_kernels_active_path();  // bconv.cpp: the kernel path dispatched on this CPU
extern "C" int64_t bidrn_kernels_thread_count();      // et_ops.cpp: the threadpool's size as the ops see it

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
using executorch::extension::FileDataLoader;
using executorch::extension::MallocMemoryAllocator;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::Program;
using executorch::runtime::Span;

namespace {

[[noreturn]] void fail(const std::string& why, int code = 2) {
  std::fprintf(stderr, "bidrn_pte_runner: %s\n", why.c_str());
  std::exit(code);
}

int64_t parse_int(const char* flag, const char* text, int64_t least) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (!*text || *end || v < least) fail(std::string(flag) + " takes an integer >= " + std::to_string(least) +
                                        ", got '" + text + "'");
  return v;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += char(c);
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof(buf), "\\u%04x", c); out += buf; }
    else out += char(c);
  }
  return out + "\"";
}

int64_t peak_rss_kb() {  // VmHWM of /proc/self/status (Linux, Android)
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help")) {
    std::fprintf(stderr,
                 "usage: bidrn_pte_runner PROGRAM.pte [--input FILE.f32] [--seed S] [--warmup N] [--runs N]\n"
                 "                        [--threads N] [--outputs FILE] [--method NAME]\n");
    return argc < 2 ? 2 : 0;
  }
  const char* path = argv[1];
  std::string input_file, outputs_file, method_name = "forward";
  int64_t seed = 0, warmup = 1, runs = 1, threads = 1;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) fail(flag + " needs a value");
    const char* v = argv[++i];
    if (flag == "--input") input_file = v;
    else if (flag == "--outputs") outputs_file = v;
    else if (flag == "--method") method_name = v;
    else if (flag == "--seed") seed = parse_int("--seed", v, 0);
    else if (flag == "--warmup") warmup = parse_int("--warmup", v, 0);
    else if (flag == "--runs") runs = parse_int("--runs", v, 1);
    else if (flag == "--threads") threads = parse_int("--threads", v, 1);
    else fail("unknown option " + flag);
  }

  executorch::runtime::runtime_init();
  // Before the method loads (XNNPACK takes the pool at init): the caller's thread plus threads - 1 workers.
  if (auto* pool = executorch::extension::threadpool::get_threadpool()) {
    if (!pool->_unsafe_reset_threadpool(uint32_t(threads))) fail("could not set " + std::to_string(threads) + " threads");
  }
  auto loader = FileDataLoader::from(path);
  if (!loader.ok()) fail(std::string("cannot read ") + path, 3);
  auto program = Program::load(&loader.get(), Program::Verification::Minimal);
  if (!program.ok()) fail(std::string(path) + " is not an ExecuTorch program (export it again)", 3);
  auto meta = program->method_meta(method_name.c_str());
  if (!meta.ok()) fail(std::string(path) + " has no method '" + method_name + "'", 3);

  std::vector<std::vector<uint8_t>> planned(meta->num_memory_planned_buffers());
  std::vector<Span<uint8_t>> spans;
  for (size_t i = 0; i < planned.size(); ++i) {
    planned[i].resize(size_t(meta->memory_planned_buffer_size(i).get()));
    spans.emplace_back(planned[i].data(), planned[i].size());
  }
  HierarchicalAllocator planned_memory({spans.data(), spans.size()});
  MallocMemoryAllocator method_memory, temp_memory;
  MemoryManager memory(&method_memory, &planned_memory, &temp_memory);
  auto method = program->load_method(method_name.c_str(), &memory);
  if (!method.ok())
    fail("loading '" + method_name + "' failed (error " + std::to_string(int(method.error())) +
         "): an operator this runner lacks? (every bidrn:: op is linked in; the rest come from the runtime)", 4);

  // Inputs: the float tensors get the image; other inputs are not supported (the exported models have one).
  std::vector<std::vector<float>> buffers;
  std::vector<std::vector<int32_t>> sizes;
  std::vector<std::vector<uint8_t>> orders;
  std::vector<TensorImpl> impls;
  buffers.reserve(meta->num_inputs()), sizes.reserve(meta->num_inputs()), orders.reserve(meta->num_inputs());
  impls.reserve(meta->num_inputs());
  for (size_t i = 0; i < meta->num_inputs(); ++i) {
    auto info = meta->input_tensor_meta(i);
    if (!info.ok() || info->scalar_type() != ScalarType::Float) fail("input " + std::to_string(i) + " is not a float tensor");
    sizes.emplace_back(info->sizes().begin(), info->sizes().end());
    orders.emplace_back(info->dim_order().begin(), info->dim_order().end());
    size_t n = 1;
    for (int32_t s : sizes.back()) n *= size_t(s);
    buffers.emplace_back(n);
    if (!input_file.empty()) {
      std::ifstream f(input_file, std::ios::binary | std::ios::ate);
      if (!f) fail("cannot read " + input_file, 3);
      if (size_t(f.tellg()) != n * sizeof(float))
        fail(input_file + " has " + std::to_string(size_t(f.tellg())) + " bytes; input " + std::to_string(i) +
             " takes " + std::to_string(n) + " float32 values (" + std::to_string(n * sizeof(float)) + " bytes)");
      f.seekg(0);
      f.read(reinterpret_cast<char*>(buffers.back().data()), std::streamsize(n * sizeof(float)));
    } else {
      std::mt19937_64 rng(uint64_t(seed) + i);
      std::uniform_real_distribution<float> u(0.0f, 1.0f);
      for (float& x : buffers.back()) x = u(rng);
    }
    impls.emplace_back(ScalarType::Float, ssize_t(sizes.back().size()), sizes.back().data(), buffers.back().data(),
                       orders.back().data());
  }

  std::vector<double> times;
  for (int64_t r = 0; r < warmup + runs; ++r) {
    // The inputs again before every execute, outside the timing, as an app does per frame: the memory plan may
    // give the input's bytes to later tensors once the input is dead (Python's execute copies them in each call).
    for (size_t i = 0; i < impls.size(); ++i) {
      const Error e = method->set_input(EValue(Tensor(&impls[i])), i);
      if (e != Error::Ok) fail("set_input " + std::to_string(i) + " failed (error " + std::to_string(int(e)) + ")");
    }
    const auto t0 = std::chrono::steady_clock::now();
    const Error e = method->execute();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (e != Error::Ok) fail("execute failed (error " + std::to_string(int(e)) + ")", 5);
    if (r >= warmup) times.push_back(ms);
  }

  std::string shapes;
  FILE* out = nullptr;
  std::string tmp;
  if (!outputs_file.empty()) {
    tmp = outputs_file + ".partial";
    out = std::fopen(tmp.c_str(), "wb");
    if (!out) fail("cannot write " + outputs_file, 3);
    std::fwrite("BDRNOUT1", 1, 8, out);
  }
  int64_t tensors = 0;
  for (size_t i = 0; i < method->outputs_size(); ++i) {
    const EValue& v = method->get_output(i);
    if (!v.isTensor()) continue;
    const Tensor t = v.toTensor();
    shapes += std::string(tensors ? ", " : "") + "[";
    for (ssize_t d = 0; d < t.dim(); ++d) shapes += (d ? ", " : "") + std::to_string(t.size(d));
    shapes += "]";
    ++tensors;
    if (out) {
      const int32_t head[2] = {int32_t(t.scalar_type()), int32_t(t.dim())};
      std::fwrite(head, sizeof(head), 1, out);
      for (ssize_t d = 0; d < t.dim(); ++d) {
        const int64_t s = t.size(d);
        std::fwrite(&s, sizeof(s), 1, out);
      }
      const int64_t bytes = int64_t(t.nbytes());
      std::fwrite(&bytes, sizeof(bytes), 1, out);
      std::fwrite(t.const_data_ptr(), 1, size_t(bytes), out);
    }
  }
  if (out) {
    const bool ok = std::fflush(out) == 0 && !std::ferror(out);
    std::fclose(out);
    if (!ok || std::rename(tmp.c_str(), outputs_file.c_str()) != 0) {
      std::remove(tmp.c_str());
      fail("cannot write " + outputs_file, 3);
    }
  }

  std::printf("{\"program\": %s, \"method\": %s, \"threads\": %lld, \"warmup\": %lld, \"ms\": [",
              json_string(path).c_str(), json_string(method_name).c_str(), (long long)threads, (long long)warmup);
  for (size_t i = 0; i < times.size(); ++i) std::printf("%s%.4f", i ? ", " : "", times[i]);
  std::printf("], \"peak_rss_kb\": %lld, \"kernel_path\": %s, \"kernel_threads\": %lld, \"outputs\": [%s]}\n",
              (long long)peak_rss_kb(), json_string(bidrn_kernels_active_path()).c_str(),
              (long long)bidrn_kernels_thread_count(), shapes.c_str());
  return 0;
}
