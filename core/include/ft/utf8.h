/* UTF-8 text: the one validator that the file formats (tensor names and metadata of
 * safetensors and HDF5 files) and the JSON reader and writer share. */
#ifndef FT_UTF8_H
#define FT_UTF8_H

#include <stddef.h>

/* Length (1 to 4) of the UTF-8 sequence that starts at s[0], reading at most n bytes,
 * if it is well formed per RFC 3629: its code point written in the shortest form (no
 * overlong sequences such as C0 80 or E0 80 80), not a surrogate (U+D800..U+DFFF), at
 * most U+10FFFF, and every continuation byte present. Any ASCII byte, zero included,
 * is a sequence of 1. Returns 0 for anything else, and when n is 0. */
int ft_utf8_sequence(const char *s, size_t n);

/* Whether s[0..n) is a series of well-formed sequences (as ft_utf8_sequence); zero
 * bytes are accepted, so a caller that wants C strings checks for them itself. */
int ft_utf8_valid(const char *s, size_t n);

#endif
