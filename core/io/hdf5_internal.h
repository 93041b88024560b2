/* Internal to core/io's HDF5 files: the writer (hdf5.c), the loader (hdf5_load.c) and the
 * raw checks of the structures libhdf5 1.10 mishandles when they are corrupt
 * (hdf5_check.c), which the loader runs on the file's bytes before asking the library to
 * decode those structures. */
#ifndef FT_IO_HDF5_INTERNAL_H
#define FT_IO_HDF5_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "ft/tensor.h"

/* Tensors are written and read with the file's little-endian types as memory types. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the HDF5 code assumes a little-endian host");

/* hdf5.c: HDF5's own error printing off; and the most specific message of HDF5's error
 * stack, which must be captured right after the failing call (any later successful call
 * clears the stack). */
void h5io_quiet(void);
const char *h5io_capture(void);

/* hdf5.c: the float types of the tensor dtypes. HDF5 1.10 predefines IEEE float32 and
 * float64 only; float16 is IEEE binary16 (sign bit 15, 5 exponent bits at 10, bias 15,
 * 10 mantissa bits), as h5py and numpy build it, and bfloat16 the top half of a float32
 * (sign bit 15, 8 exponent bits at 7, bias 127, 7 mantissa bits). Returns a new type of
 * the given byte order (close it with H5Tclose), or -1. */
hid_t h5io_float_type(ft_dtype dtype, H5T_order_t order);
/* The tensor dtype of HDF5 float type `type` when its layout is one of those four (either
 * byte order): returns 1 and sets *dtype. Otherwise returns 0 and describes the layout in
 * layout[0..len) for a message. */
int h5io_float_dtype(hid_t type, ft_dtype *dtype, char *layout, size_t len);

/* The attribute messages of the object header at addr (version 1 headers; version 2
 * headers carry checksums the library verifies): each one's name, datatype, dataspace
 * and data must be well formed and fit in its message, and the header's chunks must fit
 * in the file. Returns 0, or -1 with the reason in why. */
int ft_h5check_attributes(int fd, uint64_t file_size, uint64_t addr, char *why, size_t whylen);

/* Every global heap collection ("GCOL" block, where variable-length strings live) of the
 * file is inside the file and walks to its end; matches inside the n byte ranges skip[]
 * (the datasets' data) are ignored. Returns 0, or -1 with the reason in why. */
int ft_h5check_global_heaps(int fd, uint64_t file_size, const uint64_t (*skip)[2], int n,
                            char *why, size_t whylen);

#endif
