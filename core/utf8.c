/* UTF-8 validation (RFC 3629, table 3-7 of the Unicode standard): what a lead byte
 * allows as its second byte rules out overlong forms, surrogates and code points past
 * U+10FFFF without decoding the code point. */
#include "ft/utf8.h"

int ft_utf8_sequence(const char *s, size_t n) {
    const unsigned char *b = (const unsigned char *)s;
    if (n == 0) return 0;
    unsigned c = b[0];
    if (c < 0x80) return 1;
    /* C0, C1 (overlong two-byte forms), F5..FF and lone continuation bytes lead nothing. */
    int len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || (size_t)len > n) return 0;
    for (int k = 1; k < len; k++)
        if ((b[k] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && b[1] < 0xa0) || (c == 0xf0 && b[1] < 0x90)) return 0;   /* overlong */
    if (c == 0xed && b[1] > 0x9f) return 0;                                   /* surrogate */
    if (c == 0xf4 && b[1] > 0x8f) return 0;                                   /* > U+10FFFF */
    return len;
}

int ft_utf8_valid(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int len = ft_utf8_sequence(s + i, n - i);
        if (len == 0) return 0;
        i += (size_t)len;
    }
    return 1;
}
