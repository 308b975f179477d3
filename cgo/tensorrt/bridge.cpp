//go:build cgo && tensorrt

// bridge.cpp: the C ABI of bridge.h over TensorRT 10's C++ API and the CUDA
// runtime. Every exported function catches every exception; TensorRT's own
// API is noexcept, so what can throw here is the standard library (bad_alloc,
// length_error) and nothing else.

#include "bridge.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if NV_TENSORRT_MAJOR != 10
#error "the TensorRT bridge is written against TensorRT 10 (JetPack 6.1 or later)"
#endif

namespace {

using nvinfer1::DataType;

static_assert(TG_TRT_MAX_DIMS == nvinfer1::Dims::MAX_DIMS, "TG_TRT_MAX_DIMS");
static_assert(TG_TRT_FLOAT == static_cast<int>(DataType::kFLOAT), "TG_TRT_FLOAT");
static_assert(TG_TRT_HALF == static_cast<int>(DataType::kHALF), "TG_TRT_HALF");
static_assert(TG_TRT_INT8 == static_cast<int>(DataType::kINT8), "TG_TRT_INT8");
static_assert(TG_TRT_INT32 == static_cast<int>(DataType::kINT32), "TG_TRT_INT32");
static_assert(TG_TRT_BOOL == static_cast<int>(DataType::kBOOL), "TG_TRT_BOOL");
static_assert(TG_TRT_UINT8 == static_cast<int>(DataType::kUINT8), "TG_TRT_UINT8");
static_assert(TG_TRT_FP8 == static_cast<int>(DataType::kFP8), "TG_TRT_FP8");
static_assert(TG_TRT_BF16 == static_cast<int>(DataType::kBF16), "TG_TRT_BF16");
static_assert(TG_TRT_INT64 == static_cast<int>(DataType::kINT64), "TG_TRT_INT64");
static_assert(TG_TRT_INT4 == static_cast<int>(DataType::kINT4), "TG_TRT_INT4");

// ---- errors ----------------------------------------------------------------

const char kOutOfMemory[] = "tensorrt bridge: out of memory while reporting an error";

// newError returns a malloc'ed, formatted message, or kOutOfMemory. It never
// throws.
tg_trt_error newError(const char* format, ...) noexcept {
    char buf[2048];
    va_list ap;
    va_start(ap, format);
    int n = std::vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    if (n < 0) {
        std::strcpy(buf, "tensorrt bridge: unformattable error message");
    }
    size_t len = std::strlen(buf);
    char* out = static_cast<char*>(std::malloc(len + 1));
    if (out == nullptr) {
        return kOutOfMemory;
    }
    std::memcpy(out, buf, len + 1);
    return out;
}

// Logger is the one ILogger of the process. TensorRT requires the logger of a
// builder or runtime to outlive every object made through it, and must be
// able to call it from several threads, so it is created once and never
// destroyed.
//
// It keeps the last error message in two places: per thread, which is exact
// for the errors TensorRT reports on the calling thread (all API misuse and
// deserialization errors; a cgo call stays on one OS thread from start to
// end), and process-wide with a sequence number, for errors reported from
// TensorRT's own worker threads during a build. Warnings and below are
// dropped: nothing reads them, and TensorRT is chatty.
class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        if (severity > Severity::kERROR || msg == nullptr) {
            return;
        }
        try {
            threadLast() = msg;
            std::lock_guard<std::mutex> lock(mu_);
            globalLast_ = msg;
            seq_.fetch_add(1, std::memory_order_relaxed);
        } catch (...) {
            // Out of memory while copying a message: keep the older one.
        }
    }

    uint64_t seq() const noexcept { return seq_.load(std::memory_order_relaxed); }

    // lastSince returns the error reported on this thread since the scope
    // began, else the process-wide one if it is newer than since.
    std::string lastSince(uint64_t since) {
        if (!threadLast().empty()) {
            return threadLast();
        }
        std::lock_guard<std::mutex> lock(mu_);
        if (seq_.load(std::memory_order_relaxed) != since) {
            return globalLast_;
        }
        return std::string();
    }

    static std::string& threadLast() {
        thread_local std::string last;
        return last;
    }

private:
    std::mutex mu_;
    std::string globalLast_;
    std::atomic<uint64_t> seq_{0};
};

Logger& logger() {
    static Logger* l = new Logger(); // never destroyed: see Logger
    return *l;
}

// ErrorScope spans one ABI call: it forgets this thread's previous error so
// that a failure reports only what happened during the call.
class ErrorScope {
public:
    ErrorScope() : since_(logger().seq()) { Logger::threadLast().clear(); }

    // fail formats "what: TensorRT's message" (or "what" when TensorRT said
    // nothing).
    tg_trt_error fail(const char* what) noexcept {
        try {
            std::string msg = logger().lastSince(since_);
            if (!msg.empty()) {
                return newError("%s: %s", what, msg.c_str());
            }
        } catch (...) {
        }
        return newError("%s", what);
    }

private:
    uint64_t since_;
};

tg_trt_error cudaFail(const char* what, cudaError_t err) noexcept {
    return newError("%s: CUDA error %d (%s)", what, static_cast<int>(err), cudaGetErrorString(err));
}

// guard runs f, turning any exception into an error message.
template <typename F>
tg_trt_error guard(const char* fn, F&& f) noexcept {
    try {
        return f();
    } catch (const std::bad_alloc&) {
        return newError("%s: out of host memory", fn);
    } catch (const std::exception& e) {
        return newError("%s: %s", fn, e.what());
    } catch (...) {
        return newError("%s: unknown C++ exception", fn);
    }
}

// ---- helpers ---------------------------------------------------------------

template <typename T>
struct Deleter {
    void operator()(T* p) const noexcept { delete p; } // TensorRT 10: objects are released with delete
};
template <typename T>
using Owned = std::unique_ptr<T, Deleter<T>>;

bool toDims(const tg_trt_dims& in, nvinfer1::Dims* out) noexcept {
    if (in.rank < 0 || in.rank > nvinfer1::Dims::MAX_DIMS) {
        return false;
    }
    out->nbDims = in.rank;
    for (int32_t i = 0; i < nvinfer1::Dims::MAX_DIMS; i++) {
        out->d[i] = i < in.rank ? in.d[i] : 0;
    }
    return true;
}

bool fromDims(const nvinfer1::Dims& in, tg_trt_dims* out) noexcept {
    if (in.nbDims < 0 || in.nbDims > TG_TRT_MAX_DIMS) {
        return false;
    }
    out->rank = in.nbDims;
    for (int32_t i = 0; i < TG_TRT_MAX_DIMS; i++) {
        out->d[i] = i < in.nbDims ? in.d[i] : 0;
    }
    return true;
}

std::string dimsString(const nvinfer1::Dims& d) {
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims && i < nvinfer1::Dims::MAX_DIMS; i++) {
        if (i > 0) {
            s += ' ';
        }
        s += std::to_string(d.d[i]);
    }
    return s + "]";
}

// elementSize is the host size of the element types tg_trt_infer moves.
size_t elementSize(int32_t dtype) noexcept {
    switch (dtype) {
    case TG_TRT_FLOAT:
    case TG_TRT_INT32:
        return 4;
    case TG_TRT_INT64:
        return 8;
    }
    return 0;
}

// byteSize is the size of a dense tensor of shape d, or false if a dimension
// is negative or the size overflows.
bool byteSize(const nvinfer1::Dims& d, size_t elem, uint64_t* out) noexcept {
    uint64_t n = elem;
    for (int32_t i = 0; i < d.nbDims; i++) {
        if (d.d[i] < 0) {
            return false;
        }
        uint64_t dim = static_cast<uint64_t>(d.d[i]);
        if (dim != 0 && n > UINT64_MAX / dim) {
            return false;
        }
        n *= dim;
    }
    *out = n;
    return true;
}

} // namespace

// ---- handles -----------------------------------------------------------------

struct tg_trt_blob {
    Owned<nvinfer1::IHostMemory> mem;
};

struct IOTensor {
    std::string name;
    bool isInput;
    int32_t dtype;
    bool onHost;
    nvinfer1::Dims shape;
};

struct tg_trt_engine {
    // Declaration order is destruction order reversed: the engine goes
    // before the runtime that deserialized it.
    Owned<nvinfer1::IRuntime> runtime;
    Owned<nvinfer1::ICudaEngine> engine;
    std::vector<IOTensor> io;
};

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t capacity = 0;
};

struct tg_trt_context {
    tg_trt_engine* engine = nullptr; // not owned
    Owned<nvinfer1::IExecutionContext> ctx;
    cudaStream_t stream = nullptr;
    std::vector<DeviceBuffer> buffers; // by IO index, grown on demand, reused across calls

    ~tg_trt_context() {
        if (stream != nullptr) {
            cudaStreamSynchronize(stream);
        }
        for (DeviceBuffer& b : buffers) {
            if (b.ptr != nullptr) {
                cudaFree(b.ptr);
            }
        }
        ctx.reset();
        if (stream != nullptr) {
            cudaStreamDestroy(stream);
        }
    }

    // deviceBuffer returns a device buffer of at least n bytes for IO index i.
    tg_trt_error deviceBuffer(size_t i, uint64_t n, void** out) noexcept {
        DeviceBuffer& b = buffers[i];
        // cudaMalloc(0) yields no pointer, and TensorRT wants an address even
        // for an empty tensor: allocate at least one allocation granule.
        size_t want = n < 256 ? 256 : static_cast<size_t>(n);
        if (b.capacity < want) {
            if (b.ptr != nullptr) {
                cudaFree(b.ptr);
                b.ptr = nullptr;
                b.capacity = 0;
            }
            cudaError_t err = cudaMalloc(&b.ptr, want);
            if (err != cudaSuccess) {
                b.ptr = nullptr;
                return cudaFail("cudaMalloc", err);
            }
            b.capacity = want;
        }
        *out = b.ptr;
        return nullptr;
    }
};

// ---- version, device, memory -----------------------------------------------------

extern "C" int32_t tg_trt_library_version(void) {
    return getInferLibVersion();
}

extern "C" int32_t tg_trt_header_version(void) {
    return static_cast<int32_t>(NV_TENSORRT_VERSION);
}

extern "C" tg_trt_error tg_trt_device(char* name, size_t name_len, int32_t* cc_major, int32_t* cc_minor,
                                      int32_t* cuda_runtime) {
    return guard("tg_trt_device", [&]() -> tg_trt_error {
        if (cc_major == nullptr || cc_minor == nullptr || cuda_runtime == nullptr) {
            return newError("device: missing argument");
        }
        int count = 0;
        cudaError_t err = cudaGetDeviceCount(&count);
        if (err != cudaSuccess) {
            return cudaFail("no usable CUDA device: cudaGetDeviceCount", err);
        }
        if (count < 1) {
            return newError("no CUDA device");
        }
        cudaDeviceProp prop;
        std::memset(&prop, 0, sizeof prop);
        err = cudaGetDeviceProperties(&prop, 0);
        if (err != cudaSuccess) {
            return cudaFail("cudaGetDeviceProperties", err);
        }
        int runtime = 0;
        err = cudaRuntimeGetVersion(&runtime);
        if (err != cudaSuccess) {
            return cudaFail("cudaRuntimeGetVersion", err);
        }
        if (name != nullptr && name_len > 0) {
            std::snprintf(name, name_len, "%s", prop.name);
        }
        *cc_major = prop.major;
        *cc_minor = prop.minor;
        *cuda_runtime = runtime;
        return nullptr;
    });
}

extern "C" void tg_trt_error_free(tg_trt_error err) {
    if (err != nullptr && err != kOutOfMemory) {
        std::free(const_cast<char*>(err));
    }
}

extern "C" void tg_trt_free(void* p) {
    std::free(p);
}

// ---- build ---------------------------------------------------------------------

extern "C" tg_trt_error tg_trt_build_plan(const void* onnx, size_t onnx_len, const tg_trt_build_options* opts,
                                          tg_trt_blob** plan) {
    return guard("tg_trt_build_plan", [&]() -> tg_trt_error {
        ErrorScope scope;
        if (onnx == nullptr || onnx_len == 0 || opts == nullptr || plan == nullptr) {
            return newError("build plan: empty model or missing argument");
        }
        Owned<nvinfer1::IBuilder> builder{nvinfer1::createInferBuilder(logger())};
        if (!builder) {
            return scope.fail("create builder");
        }
        // Explicit batch is the only mode of TensorRT 10: no flags.
        Owned<nvinfer1::INetworkDefinition> network{builder->createNetworkV2(0U)};
        if (!network) {
            return scope.fail("create network");
        }
        // The parser owns the weights it hands to the network: it lives until
        // the build is done.
        Owned<nvonnxparser::IParser> parser{nvonnxparser::createParser(*network, logger())};
        if (!parser) {
            return scope.fail("create ONNX parser");
        }
        if (!parser->parse(onnx, onnx_len)) {
            std::string msg;
            for (int i = 0; i < parser->getNbErrors() && i < 5; i++) {
                nvonnxparser::IParserError const* e = parser->getError(i);
                if (e == nullptr) {
                    continue;
                }
                if (!msg.empty()) {
                    msg += "; ";
                }
                if (e->node() >= 0) {
                    msg += "node " + std::to_string(e->node()) + ": ";
                }
                msg += e->desc() != nullptr ? e->desc() : "(no description)";
            }
            if (msg.empty()) {
                return scope.fail("parse ONNX model");
            }
            return newError("parse ONNX model: %s", msg.c_str());
        }

        Owned<nvinfer1::IBuilderConfig> config{builder->createBuilderConfig()};
        if (!config) {
            return scope.fail("create builder config");
        }
        if (opts->workspace_bytes > 0) {
            config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE,
                                       static_cast<size_t>(opts->workspace_bytes));
        }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" // kFP16, kTF32: deprecated in late 10.x, still honoured
        if (opts->fp16 != 0) {
            config->setFlag(nvinfer1::BuilderFlag::kFP16);
        }
        if (opts->tf32 == 0) {
            config->clearFlag(nvinfer1::BuilderFlag::kTF32);
        }
#pragma GCC diagnostic pop

        // Every input with a dynamic dimension needs a range of shapes; name
        // the ones without, rather than let the builder say it less clearly.
        for (int32_t i = 0; i < network->getNbInputs(); i++) {
            nvinfer1::ITensor* in = network->getInput(i);
            if (in == nullptr) {
                continue;
            }
            nvinfer1::Dims d = in->getDimensions();
            bool dynamic = false;
            for (int32_t j = 0; j < d.nbDims; j++) {
                dynamic = dynamic || d.d[j] < 0;
            }
            if (!dynamic) {
                continue;
            }
            bool covered = false;
            for (int32_t p = 0; p < opts->n_profile_inputs; p++) {
                const char* name = opts->profile_inputs[p].name;
                covered = covered || (name != nullptr && std::strcmp(name, in->getName()) == 0);
            }
            if (!covered) {
                return newError("input \"%s\" has dynamic shape %s: give its min/opt/max shapes in the build options",
                                in->getName(), dimsString(d).c_str());
            }
        }
        for (int32_t p = 0; p < opts->n_profile_inputs; p++) {
            const char* name = opts->profile_inputs[p].name;
            bool known = false;
            for (int32_t i = 0; i < network->getNbInputs() && name != nullptr; i++) {
                nvinfer1::ITensor* in = network->getInput(i);
                known = known || (in != nullptr && std::strcmp(name, in->getName()) == 0);
            }
            if (!known) {
                return newError("the build options give shapes for \"%s\", which is not an input of the model",
                                name != nullptr ? name : "");
            }
        }
        if (opts->n_profile_inputs > 0) {
            // Owned by the builder.
            nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
            if (profile == nullptr) {
                return scope.fail("create optimization profile");
            }
            for (int32_t p = 0; p < opts->n_profile_inputs; p++) {
                const tg_trt_profile_input& in = opts->profile_inputs[p];
                nvinfer1::Dims lo{}, mid{}, hi{};
                if (in.name == nullptr || !toDims(in.min, &lo) || !toDims(in.opt, &mid) || !toDims(in.max, &hi)) {
                    return newError("optimization profile entry %d: no name or a rank outside 0..%d", p,
                                    TG_TRT_MAX_DIMS);
                }
                if (!profile->setDimensions(in.name, nvinfer1::OptProfileSelector::kMIN, lo) ||
                    !profile->setDimensions(in.name, nvinfer1::OptProfileSelector::kOPT, mid) ||
                    !profile->setDimensions(in.name, nvinfer1::OptProfileSelector::kMAX, hi)) {
                    return scope.fail(("optimization profile for input \"" + std::string(in.name) + "\"").c_str());
                }
            }
            if (config->addOptimizationProfile(profile) < 0) {
                return scope.fail("add optimization profile (do the names and ranks match the model's inputs?)");
            }
        }

        Owned<nvinfer1::IHostMemory> mem{builder->buildSerializedNetwork(*network, *config)};
        if (!mem || mem->data() == nullptr || mem->size() == 0) {
            return scope.fail("build engine");
        }
        *plan = new tg_trt_blob{std::move(mem)};
        return nullptr;
    });
}

extern "C" const void* tg_trt_blob_data(const tg_trt_blob* blob) {
    return blob != nullptr ? blob->mem->data() : nullptr;
}

extern "C" size_t tg_trt_blob_size(const tg_trt_blob* blob) {
    return blob != nullptr ? blob->mem->size() : 0;
}

extern "C" void tg_trt_blob_free(tg_trt_blob* blob) {
    delete blob;
}

// ---- engine ------------------------------------------------------------------

extern "C" tg_trt_error tg_trt_engine_load(const void* plan, size_t plan_len, tg_trt_engine** engine) {
    return guard("tg_trt_engine_load", [&]() -> tg_trt_error {
        ErrorScope scope;
        if (plan == nullptr || plan_len == 0 || engine == nullptr) {
            return newError("load engine: empty plan");
        }
        std::unique_ptr<tg_trt_engine> e{new tg_trt_engine()};
        e->runtime.reset(nvinfer1::createInferRuntime(logger()));
        if (!e->runtime) {
            return scope.fail("create runtime");
        }
        e->engine.reset(e->runtime->deserializeCudaEngine(plan, plan_len));
        if (!e->engine) {
            return scope.fail("deserialize plan (not a plan, or built by another TensorRT version or for another GPU)");
        }
        int32_t n = e->engine->getNbIOTensors();
        for (int32_t i = 0; i < n; i++) {
            const char* name = e->engine->getIOTensorName(i);
            if (name == nullptr) {
                return scope.fail("engine IO tensor without a name");
            }
            IOTensor t;
            t.name = name;
            nvinfer1::TensorIOMode mode = e->engine->getTensorIOMode(name);
            if (mode != nvinfer1::TensorIOMode::kINPUT && mode != nvinfer1::TensorIOMode::kOUTPUT) {
                return newError("engine IO tensor \"%s\" is neither input nor output", name);
            }
            t.isInput = mode == nvinfer1::TensorIOMode::kINPUT;
            t.dtype = static_cast<int32_t>(e->engine->getTensorDataType(name));
            t.onHost = e->engine->getTensorLocation(name) == nvinfer1::TensorLocation::kHOST;
            t.shape = e->engine->getTensorShape(name);
            if (t.shape.nbDims < 0 || t.shape.nbDims > nvinfer1::Dims::MAX_DIMS) {
                return newError("engine IO tensor \"%s\" has no valid shape", name);
            }
            e->io.push_back(std::move(t));
        }
        *engine = e.release();
        return nullptr;
    });
}

extern "C" int32_t tg_trt_engine_num_io(const tg_trt_engine* engine) {
    return engine != nullptr ? static_cast<int32_t>(engine->io.size()) : 0;
}

extern "C" tg_trt_error tg_trt_engine_io(const tg_trt_engine* engine, int32_t index, tg_trt_io_info* info) {
    return guard("tg_trt_engine_io", [&]() -> tg_trt_error {
        if (engine == nullptr || info == nullptr || index < 0 || static_cast<size_t>(index) >= engine->io.size()) {
            return newError("engine IO index %d out of range", index);
        }
        const IOTensor& t = engine->io[static_cast<size_t>(index)];
        tg_trt_io_info out;
        out.name = t.name.c_str();
        out.is_input = t.isInput ? 1 : 0;
        out.dtype = t.dtype;
        out.on_host = t.onHost ? 1 : 0;
        if (!fromDims(t.shape, &out.shape)) {
            return newError("engine IO tensor \"%s\" has no valid shape", t.name.c_str());
        }
        *info = out;
        return nullptr;
    });
}

extern "C" void tg_trt_engine_free(tg_trt_engine* engine) {
    delete engine;
}

// ---- context and inference -----------------------------------------------------

extern "C" tg_trt_error tg_trt_context_create(tg_trt_engine* engine, tg_trt_context** ctx) {
    return guard("tg_trt_context_create", [&]() -> tg_trt_error {
        ErrorScope scope;
        if (engine == nullptr || ctx == nullptr) {
            return newError("create context: no engine");
        }
        std::unique_ptr<tg_trt_context> c{new tg_trt_context()};
        c->engine = engine;
        c->buffers.resize(engine->io.size());
        c->ctx.reset(engine->engine->createExecutionContext());
        if (!c->ctx) {
            return scope.fail("create execution context");
        }
        cudaError_t err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
        if (err != cudaSuccess) {
            c->stream = nullptr;
            return cudaFail("cudaStreamCreateWithFlags", err);
        }
        *ctx = c.release();
        return nullptr;
    });
}

extern "C" void tg_trt_context_free(tg_trt_context* ctx) {
    delete ctx;
}

namespace {

// Outputs hands the output buffers to the caller on success and frees them
// otherwise. It also drains the stream on every exit, so no copy still
// reads the caller's input memory, or writes an output buffer, after
// tg_trt_infer returns.
class Outputs {
public:
    Outputs(tg_trt_tensor* out, int32_t n, cudaStream_t stream) : out_(out), n_(n), stream_(stream) {
        for (int32_t i = 0; i < n_; i++) {
            out_[i].data = nullptr;
            out_[i].nbytes = 0;
        }
    }
    ~Outputs() {
        cudaStreamSynchronize(stream_);
        if (done_) {
            return;
        }
        for (int32_t i = 0; i < n_; i++) {
            std::free(out_[i].data);
            out_[i].data = nullptr;
            out_[i].nbytes = 0;
        }
    }
    void commit() noexcept { done_ = true; }

private:
    tg_trt_tensor* out_;
    int32_t n_;
    cudaStream_t stream_;
    bool done_ = false;
};

const char* typeName(int32_t dtype) noexcept {
    switch (dtype) {
    case TG_TRT_FLOAT:
        return "float32";
    case TG_TRT_HALF:
        return "float16";
    case TG_TRT_INT8:
        return "int8";
    case TG_TRT_INT32:
        return "int32";
    case TG_TRT_BOOL:
        return "bool";
    case TG_TRT_UINT8:
        return "uint8";
    case TG_TRT_FP8:
        return "fp8";
    case TG_TRT_BF16:
        return "bfloat16";
    case TG_TRT_INT64:
        return "int64";
    case TG_TRT_INT4:
        return "int4";
    }
    return "unknown";
}

} // namespace

extern "C" tg_trt_error tg_trt_infer(tg_trt_context* c, const tg_trt_tensor* inputs, int32_t n_inputs,
                                     tg_trt_tensor* outputs, int32_t n_outputs) {
    return guard("tg_trt_infer", [&]() -> tg_trt_error {
        ErrorScope scope;
        if (c == nullptr || (n_inputs > 0 && inputs == nullptr) || (n_outputs > 0 && outputs == nullptr) ||
            n_inputs < 0 || n_outputs < 0) {
            return newError("infer: missing argument");
        }
        Outputs guardOut(outputs, n_outputs, c->stream);
        const std::vector<IOTensor>& io = c->engine->io;
        std::vector<bool> seen(io.size(), false);
        size_t wantIn = 0, wantOut = 0;
        for (const IOTensor& t : io) {
            (t.isInput ? wantIn : wantOut)++;
        }
        if (static_cast<size_t>(n_inputs) != wantIn || static_cast<size_t>(n_outputs) != wantOut) {
            return newError("infer: %d inputs and %d outputs given, the engine has %zu and %zu", n_inputs, n_outputs,
                            wantIn, wantOut);
        }

        // Inputs: shapes first, then data (host tensors by address, device
        // tensors copied into the context's buffers).
        for (int32_t i = 0; i < n_inputs; i++) {
            const tg_trt_tensor& in = inputs[i];
            if (in.io_index < 0 || static_cast<size_t>(in.io_index) >= io.size() || !io[in.io_index].isInput ||
                seen[in.io_index]) {
                return newError("infer: input %d: bad or repeated engine input index %d", i, in.io_index);
            }
            seen[in.io_index] = true;
            const IOTensor& t = io[in.io_index];
            if (in.dtype != t.dtype || elementSize(in.dtype) == 0) {
                return newError("infer: input \"%s\" is %s, given %s", t.name.c_str(), typeName(t.dtype),
                                typeName(in.dtype));
            }
            nvinfer1::Dims dims{};
            uint64_t nbytes = 0;
            if (!toDims(in.shape, &dims) || dims.nbDims != t.shape.nbDims ||
                !byteSize(dims, elementSize(in.dtype), &nbytes) || nbytes != in.nbytes ||
                (nbytes > 0 && in.data == nullptr)) {
                return newError("infer: input \"%s\": shape %s and %llu bytes do not match the engine's rank %d",
                                t.name.c_str(), dimsString(dims).c_str(), static_cast<unsigned long long>(in.nbytes),
                                t.shape.nbDims);
            }
            if (!c->ctx->setInputShape(t.name.c_str(), dims)) {
                return scope.fail(("input \"" + t.name + "\": shape " + dimsString(dims) +
                                   " refused (outside the engine's optimization profile?)")
                                      .c_str());
            }
            void* addr = in.data;
            if (!t.onHost) {
                tg_trt_error err = c->deviceBuffer(in.io_index, nbytes, &addr);
                if (err != nullptr) {
                    return err;
                }
                if (nbytes > 0) {
                    cudaError_t cerr =
                        cudaMemcpyAsync(addr, in.data, nbytes, cudaMemcpyHostToDevice, c->stream);
                    if (cerr != cudaSuccess) {
                        return cudaFail("copy input to device", cerr);
                    }
                }
            }
            if (!c->ctx->setTensorAddress(t.name.c_str(), addr)) {
                return scope.fail(("input \"" + t.name + "\": set address").c_str());
            }
        }
        char const* missing[1] = {nullptr};
        int32_t unresolved = c->ctx->inferShapes(1, missing);
        if (unresolved != 0) {
            if (unresolved > 0 && missing[0] != nullptr) {
                return newError("infer: input \"%s\" is not sufficiently specified", missing[0]);
            }
            return scope.fail("infer output shapes");
        }

        // Outputs: their shapes are known now (unless they depend on the
        // data, which this bridge does not support).
        for (int32_t i = 0; i < n_outputs; i++) {
            tg_trt_tensor& out = outputs[i];
            if (out.io_index < 0 || static_cast<size_t>(out.io_index) >= io.size() || io[out.io_index].isInput ||
                seen[out.io_index]) {
                return newError("infer: output %d: bad or repeated engine output index %d", i, out.io_index);
            }
            seen[out.io_index] = true;
            const IOTensor& t = io[out.io_index];
            size_t elem = elementSize(t.dtype);
            if (elem == 0) {
                return newError("infer: output \"%s\" is %s, which the bridge does not return", t.name.c_str(),
                                typeName(t.dtype));
            }
            nvinfer1::Dims dims = c->ctx->getTensorShape(t.name.c_str());
            uint64_t nbytes = 0;
            if (!byteSize(dims, elem, &nbytes)) {
                return newError("infer: output \"%s\" has shape %s, which depends on the input values (not supported)",
                                t.name.c_str(), dimsString(dims).c_str());
            }
            if (!fromDims(dims, &out.shape)) {
                return newError("infer: output \"%s\" has rank %d", t.name.c_str(), dims.nbDims);
            }
            out.dtype = t.dtype;
            out.nbytes = nbytes;
            out.data = std::malloc(nbytes > 0 ? nbytes : 1);
            if (out.data == nullptr) {
                return newError("infer: output \"%s\": out of host memory for %llu bytes", t.name.c_str(),
                                static_cast<unsigned long long>(nbytes));
            }
            void* addr = out.data;
            if (!t.onHost) {
                tg_trt_error err = c->deviceBuffer(out.io_index, nbytes, &addr);
                if (err != nullptr) {
                    return err;
                }
            }
            if (!c->ctx->setTensorAddress(t.name.c_str(), addr)) {
                return scope.fail(("output \"" + t.name + "\": set address").c_str());
            }
        }

        if (!c->ctx->enqueueV3(c->stream)) {
            return scope.fail("enqueue");
        }
        for (int32_t i = 0; i < n_outputs; i++) {
            tg_trt_tensor& out = outputs[i];
            const IOTensor& t = io[out.io_index];
            if (t.onHost || out.nbytes == 0) {
                continue;
            }
            cudaError_t cerr = cudaMemcpyAsync(out.data, c->buffers[out.io_index].ptr, out.nbytes,
                                               cudaMemcpyDeviceToHost, c->stream);
            if (cerr != cudaSuccess) {
                return cudaFail("copy output to host", cerr);
            }
        }
        cudaError_t cerr = cudaStreamSynchronize(c->stream);
        if (cerr != cudaSuccess) {
            return cudaFail("run engine", cerr);
        }
        guardOut.commit();
        return nullptr;
    });
}
