/*
 * bridge.h: the C ABI of the TensorRT bridge (bridge.cpp), the only thing
 * the Go side sees. Plain C, no TensorRT or CUDA headers, so the cgo
 * preamble that includes it needs neither.
 *
 * Rules every function keeps:
 *   - No C++ exception crosses this ABI: bridge.cpp catches everything.
 *   - A function that can fail returns a tg_trt_error: NULL on success,
 *     else a NUL-terminated message that the caller releases with
 *     tg_trt_error_free. Messages are allocated per call (not kept in a
 *     static or per-handle buffer), because Go may run the next call on the
 *     same OS thread, or on the same handle, before it has copied the text.
 *     When even that allocation fails, the message is a static string, which
 *     tg_trt_error_free recognizes and leaves alone.
 *   - Out-parameters are written only on success.
 *   - Handles are freed by their own _free function (NULL is allowed), and
 *     never while another call uses them: contexts before their engine.
 */
#ifndef TG_TENSORRT_BRIDGE_H
#define TG_TENSORRT_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most dimensions a tensor has (nvinfer1::Dims::MAX_DIMS). */
#define TG_TRT_MAX_DIMS 8

/* Element types: the values of nvinfer1::DataType (bridge.cpp checks). */
enum {
    TG_TRT_FLOAT = 0,
    TG_TRT_HALF = 1,
    TG_TRT_INT8 = 2,
    TG_TRT_INT32 = 3,
    TG_TRT_BOOL = 4,
    TG_TRT_UINT8 = 5,
    TG_TRT_FP8 = 6,
    TG_TRT_BF16 = 7,
    TG_TRT_INT64 = 8,
    TG_TRT_INT4 = 9
};

typedef const char* tg_trt_error;

typedef struct tg_trt_blob tg_trt_blob;       /* a serialized plan */
typedef struct tg_trt_engine tg_trt_engine;   /* a deserialized engine and its runtime */
typedef struct tg_trt_context tg_trt_context; /* an execution context, its stream and device buffers */

typedef struct {
    int32_t rank;
    int64_t d[TG_TRT_MAX_DIMS];
} tg_trt_dims;

/* The shapes one dynamic input may take (an optimization profile entry). */
typedef struct {
    const char* name;
    tg_trt_dims min, opt, max;
} tg_trt_profile_input;

typedef struct {
    uint64_t workspace_bytes; /* 0: TensorRT's default limit */
    int32_t fp16;             /* non-zero: allow FP16 kernels */
    int32_t tf32;             /* non-zero: allow TF32 for FP32 math (TensorRT's default); zero clears it */
    int32_t n_profile_inputs;
    const tg_trt_profile_input* profile_inputs; /* one profile holding them all */
} tg_trt_build_options;

typedef struct {
    const char* name; /* owned by the engine */
    int32_t is_input; /* 1: input, 0: output */
    int32_t dtype;    /* TG_TRT_* */
    int32_t on_host;  /* 1: TensorRT wants this tensor in host memory (a shape tensor) */
    tg_trt_dims shape; /* -1 for a dimension chosen at run time */
} tg_trt_io_info;

/*
 * A tensor passed to or returned by tg_trt_infer. For an input the caller
 * fills everything; data is host memory that must stay valid for the call.
 * For an output the caller sets io_index and the bridge fills the rest:
 * data is then malloc'ed host memory the caller frees with tg_trt_free.
 */
typedef struct {
    int32_t io_index; /* the tensor's index in the engine's IO list */
    int32_t dtype;    /* TG_TRT_*: must be the engine's type for the tensor */
    tg_trt_dims shape;
    void* data;
    uint64_t nbytes;
} tg_trt_tensor;

/* TensorRT's version as major*10000 + minor*100 + patch: of the loaded
 * library, and of the headers the bridge was compiled against. */
int32_t tg_trt_library_version(void);
int32_t tg_trt_header_version(void);

/* The CUDA device the bridge runs on (device 0): its name (truncated to
 * name_len-1 bytes), compute capability and the CUDA runtime version
 * (major*1000 + minor*10). Fails when there is no usable device. */
tg_trt_error tg_trt_device(char* name, size_t name_len, int32_t* cc_major, int32_t* cc_minor,
                           int32_t* cuda_runtime);

void tg_trt_error_free(tg_trt_error err);
void tg_trt_free(void* p);

/* Builds an engine plan from an ONNX model in memory. */
tg_trt_error tg_trt_build_plan(const void* onnx, size_t onnx_len, const tg_trt_build_options* opts,
                               tg_trt_blob** plan);
const void* tg_trt_blob_data(const tg_trt_blob* blob);
size_t tg_trt_blob_size(const tg_trt_blob* blob);
void tg_trt_blob_free(tg_trt_blob* blob);

/* Deserializes a plan. The bytes are not retained. */
tg_trt_error tg_trt_engine_load(const void* plan, size_t plan_len, tg_trt_engine** engine);
int32_t tg_trt_engine_num_io(const tg_trt_engine* engine);
tg_trt_error tg_trt_engine_io(const tg_trt_engine* engine, int32_t index, tg_trt_io_info* info);
void tg_trt_engine_free(tg_trt_engine* engine);

/* An execution context with its own CUDA stream. One call at a time per
 * context; any number of contexts of one engine may run at once. */
tg_trt_error tg_trt_context_create(tg_trt_engine* engine, tg_trt_context** ctx);
void tg_trt_context_free(tg_trt_context* ctx);

/*
 * Runs the engine once, synchronously: copies the inputs to device
 * buffers, enqueues the engine on the context's stream, copies the outputs
 * back and waits for the stream. inputs holds every engine input exactly
 * once; outputs holds every engine output exactly once. On failure no
 * output data is returned (all data pointers are NULL).
 */
tg_trt_error tg_trt_infer(tg_trt_context* ctx, const tg_trt_tensor* inputs, int32_t n_inputs,
                          tg_trt_tensor* outputs, int32_t n_outputs);

#ifdef __cplusplus
}
#endif

#endif /* TG_TENSORRT_BRIDGE_H */
