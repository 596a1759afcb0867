/* tests/fuzz/fuzz.h - what the libFuzzer targets share: the entry point's prototype (the
 * project builds with -Wmissing-prototypes), a check that survives NDEBUG and names the failed
 * invariant before aborting (libFuzzer then saves the input as a crash), and the chunk-size
 * schedule that splits one input into feeds. Header-only; nothing here allocates. */
#ifndef CHAT_TESTS_FUZZ_H
#define CHAT_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv); /* optional; defined by targets that need it */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Chunk sizes come from FUZZ_NCHUNK input bytes, used in turn: byte b means a feed of b bytes,
 * and 0 means an empty feed followed by a 1-byte one (so 00 00 00 is "one byte at a time"). */
#define FUZZ_NCHUNK 3

typedef struct fuzz_chunker {
    const uint8_t *sizes; /* FUZZ_NCHUNK bytes */
    unsigned next;
} fuzz_chunker_t;

/* The next chunk length for `left` remaining bytes (left > 0): at least 1, at most left.
 * *empty_first is set when an empty feed should precede it. */
static inline size_t fuzz_next_chunk(fuzz_chunker_t *c, size_t left, int *empty_first)
{
    size_t want = c->sizes[c->next++ % FUZZ_NCHUNK];
    *empty_first = want == 0;
    if (want == 0)
        want = 1;
    return want < left ? want : left;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
static inline int fuzz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

#endif
