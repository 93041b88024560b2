/* Internal to core/io's HDF5 files: the writer (hdf5.c), the loader (hdf5_load.c) and the
 * raw checks of the structures libhdf5 1.10 mishandles when they are corrupt
 * (hdf5_check.c), which the loader runs on the file's bytes before asking the library to
 * decode those structures. */
#ifndef FT_IO_HDF5_INTERNAL_H
#define FT_IO_HDF5_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* hdf5.c: HDF5's own error printing off; and the most specific message of HDF5's error
 * stack, which must be captured right after the failing call (any later successful call
 * clears the stack). */
void h5io_quiet(void);
const char *h5io_capture(void);

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
