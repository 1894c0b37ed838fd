"""cffi build script for `twinmpc.crypto._field_kernel` (the C sources are crypto/field_kernel.c,
crypto/field_kernel_flp.c, crypto/field_kernel_ifma.c and crypto/xof_kernel.c, compiled as one
unit: the later files use the field's element helpers).

Run by setuptools at `pip install` (setup.py's ``cffi_modules``); never imported at run time.
"""

from pathlib import Path

from cffi import FFI

_SOURCES = [Path(__file__).with_name(name) for name in ("field_kernel.c", "field_kernel_flp.c", "field_kernel_ifma.c", "xof_kernel.c")]

def _as_void_pointers(decls: str) -> str:
    return decls.replace("const uint64_t *", "const void *").replace("uint64_t *", "void *").replace(
        "unsigned char *", "void *"
    )


_BINARY = "void {name}(uint64_t *out, const uint64_t *a, const uint64_t *b, int64_t n0, int64_t n1, int64_t n2, " \
    "int64_t sa0, int64_t sa1, int64_t sa2, int64_t sb0, int64_t sb1, int64_t sb2);"

# Pointers are declared void* to cffi: a typeless ffi.from_buffer(array) costs half of a
# typed one per argument (the C functions take uint64_t*; C converts void* implicitly).
ffibuilder = FFI()
ffibuilder.cdef(
    _as_void_pointers("\n".join(
        _BINARY.format(name=f"{field}_{op}")
        for field in ("f64", "f128")
        for op in ("add", "sub", "mul", "mul_sum")
    )
    + "".join(
        f"""
void {f}_decode(uint64_t *out, const uint64_t *in, int64_t n, unsigned char *ok);
int64_t {f}_count_bad(const uint64_t *in, int64_t n);
void {f}_matvec(uint64_t *out, const uint64_t *a, const uint64_t *b, int64_t m, int64_t k, int threads);
void {f}_ntt(uint64_t *x, int64_t rows, int64_t n, const uint64_t *tw, const uint64_t *scale);
int {f}_pmul_extend(uint64_t *out, const uint64_t *wires, int64_t rows, int64_t pairs, int64_t p,
                    const uint64_t *tw_inv, const uint64_t *twist_br, const uint64_t *tw_fwd, int threads);
void {f}_range_wires(uint64_t *wires, const uint64_t *x, int64_t rows, int64_t n, const uint64_t *r,
                     int64_t chunk, int64_t calls, const uint64_t *c);
int {f}_range_evals(uint64_t *out, const uint64_t *x, int64_t rows, int64_t n, const uint64_t *r,
                    const uint64_t *lam, int64_t chunk, int64_t calls, const uint64_t *c, int threads);
int {f}_range_prove(uint64_t *out, const uint64_t *x, int64_t rows, int64_t n, const uint64_t *r,
                    const uint64_t *seeds, const uint64_t *c, int64_t chunk, int64_t calls, int64_t p,
                    const uint64_t *tw_inv, const uint64_t *twist_br, const uint64_t *tw_fwd, int threads,
                    int x_bits);
int {f}_lagrange(uint64_t *out, const uint64_t *t, int64_t n, const uint64_t *roots, const uint64_t *n_inv);"""
        for f in ("f64", "f128")
    )
    + """
void ts_init(void *h, int64_t domain);
void ts_absorb(void *h, const void *in, int64_t len);
void ts_squeeze(void *h, void *out, int64_t len);
void ts_absorb_many(void **h, const void **in, const int64_t *len, int n);
int ts_set_simd(int level);
int f128_set_ifma(int level);"""
    + "".join(
        f"""
int {f}_expand_share(void *A, int64_t n, uint64_t *out, void *B, const void *meas, int meas_bits, uint64_t *lead,
                     void *C);"""
        for f in ("f64", "f128")
    ))
)
ffibuilder.set_source(
    "twinmpc.crypto._field_kernel",
    "\n".join(path.read_text() for path in _SOURCES),
    extra_compile_args=["-O3", "-std=c11", "-pthread"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
