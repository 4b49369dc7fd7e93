/* The default noise's uniforms on the CPU in one pass (`noise.cpu_uniforms`; `noise.uniform_tensor` is the
 * definition, in torch ops, that every device runs; tests check the two are bit for bit the same).
 *
 * uniforms(out, salts, low, c0, c1): out[k, i] for draw k (salts[k], stored as xorshift16 of the salt) and
 * element i of a batch, whose global element index is g = low + i (+ the batch's high word):
 *
 *     e = mix32(g mod 2^32  xor  c),   c = c0 below 2^32, c1 from there (the high word's offset),
 *     h = mix32(e xor s) (the salt trick: xorshift16 is linear, so e and s each carry their own),
 *     u = ((h >> 7) | 1) 2^-24 in float32 (= (h >> 8 + 1/2) 2^-23), or h 2^-31 + 2^-32 in float64,
 *
 * h read as a signed 32-bit integer. numpy's passes over the words cost ~6x this on cold caches, between
 * model calls (a run's noise); the keys are made a chunk at a time, so each draw's loop vectorises. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

#define CHUNK 512

static inline uint32_t mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7FEB352Du;
    h ^= h >> 15;
    h *= 0x846CA68Bu;
    h ^= h >> 16;
    return h;
}

/* mix32 after its first xorshift (the keys and salts hold theirs) */
static inline int32_t mix32_from1(uint32_t h) {
    h *= 0x7FEB352Du;
    h ^= h >> 15;
    h *= 0x846CA68Bu;
    h ^= h >> 16;
    return (int32_t)h;
}

SIMD_CLONES static void element_keys(uint32_t *e, size_t m, uint64_t g, uint32_t c0, uint32_t c1) {
    for (size_t i = 0; i < m; i++) {
        uint64_t gi = g + i;
        uint32_t v = mix32((uint32_t)gi ^ ((gi >> 32) ? c1 : c0));
        e[i] = v ^ (v >> 16);
    }
}

SIMD_CLONES static void row_float(float *o, const uint32_t *e, size_t m, uint32_t s) {
    for (size_t i = 0; i < m; i++) {
        o[i] = (float)((mix32_from1(e[i] ^ s) >> 7) | 1) * 0x1p-24f;
    }
}

SIMD_CLONES static void row_double(double *o, const uint32_t *e, size_t m, uint32_t s) {
    for (size_t i = 0; i < m; i++) {
        o[i] = (double)mix32_from1(e[i] ^ s) * 0x1p-31 + 0x1p-32;
    }
}

static void fill(char *out, int wide, size_t n, const uint32_t *salts, size_t d, uint32_t low, uint32_t c0,
                 uint32_t c1) {
    uint32_t e[CHUNK];
    for (size_t a = 0; a < n; a += CHUNK) {
        size_t m = n - a < CHUNK ? n - a : CHUNK;
        element_keys(e, m, (uint64_t)low + a, c0, c1);
        for (size_t k = 0; k < d; k++) {
            if (wide) {
                row_double((double *)out + k * n + a, e, m, salts[k]);
            } else {
                row_float((float *)out + k * n + a, e, m, salts[k]);
            }
        }
    }
}

static PyObject *uniforms(PyObject *self, PyObject *args) {
    PyObject *out_obj, *salts_obj;
    unsigned int low, c0, c1;
    if (!PyArg_ParseTuple(args, "OOIII", &out_obj, &salts_obj, &low, &c0, &c1)) {
        return NULL;
    }
    Py_buffer out, salts;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(salts_obj, &salts, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    int wide = out.format[0] == 'd';
    size_t d = (size_t)salts.len / 4, n = d ? (size_t)out.len / (size_t)out.itemsize / d : 0;
    const char *bad = NULL;
    if (!((out.format[0] == 'f' && out.itemsize == 4) || (wide && out.itemsize == 8))) {
        bad = "out must be float32 or float64";
    } else if (salts.itemsize != 4 || (salts.format[0] != 'I' && salts.format[0] != 'i')) {
        bad = "salts must be 32-bit integers";
    } else if (d == 0 || n * d * (size_t)out.itemsize != (size_t)out.len) {
        bad = "out must hold len(salts) rows of equal length";
    } else if ((uint64_t)low + n > ((uint64_t)1 << 33)) {
        bad = "a batch crosses at most one multiple of 2^32 elements";
    }
    if (bad == NULL) {
        Py_BEGIN_ALLOW_THREADS
        fill((char *)out.buf, wide, n, (const uint32_t *)salts.buf, d, low, c0, c1);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&salts);
    PyBuffer_Release(&out);
    if (bad != NULL) {
        PyErr_SetString(PyExc_ValueError, bad);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"uniforms", uniforms, METH_VARARGS,
     "uniforms(out, salts, low, c0, c1): the default noise's uniforms of len(salts) draws of elements low.. "
     "(key offsets c0 below 2^32, c1 from there) into out (float32 or float64, draw-major)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_noise", NULL, -1, methods};

PyMODINIT_FUNC PyInit__noise(void) { return PyModule_Create(&module); }
