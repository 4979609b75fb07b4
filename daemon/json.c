/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "macro.h"

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_sequence_length(const unsigned char *p) {
        unsigned char c = p[0];
        size_t n;
        unsigned cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                n = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                n = 4, cp = c & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

bool utf8_is_valid(const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        while (*p) {
                size_t n = *p < 0x80 ? 1 : utf8_sequence_length(p);

                if (n == 0)
                        return false;
                p += n;
        }
        return true;
}

char *utf8_sanitize(const char *s) {
        const unsigned char *p = (const unsigned char *) (s ? s : "");
        char *out, *o;

        /* Each bad byte (1) becomes 3: the worst case triples the length. */
        out = malloc(strlen((const char *) p) * 3 + 1);
        if (!out)
                return NULL;
        o = out;
        while (*p) {
                size_t n = utf8_sequence_length(p);

                if (n == 0) {
                        memcpy(o, "\xef\xbf\xbd", 3);
                        o += 3;
                        p++;
                } else {
                        memcpy(o, p, n);
                        o += n;
                        p += n;
                }
        }
        *o = 0;
        return out;
}

/* Bytes written as they are: printable ASCII but the quote and backslash. */
static bool json_plain(unsigned char c) {
        return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

void json_write_string(FILE *f, const char *s) {
        const unsigned char *p = (const unsigned char *) (s ? s : ""), *run = p;

        fputc('"', f);
        /* Runs of bytes that need no escaping go out in one fwrite(): one
         * call per byte made `status --json` of thousands of disks slow. */
        while (*p) {
                size_t n;

                if (json_plain(*p)) {
                        p++;
                        continue;
                }
                /* File names are bytes; JSON is UTF-8. Valid UTF-8 is
                 * written as is (not escaped: the text is then the same as
                 * utf8_sanitize()'s, which the history's name search needs). */
                n = *p >= 0x80 ? utf8_sequence_length(p) : 0;
                if (n > 0) {
                        p += n;
                        continue;
                }
                fwrite(run, 1, (size_t) (p - run), f);
                switch (*p) {
                case '"':  fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\n': fputs("\\n", f); break;
                case '\r': fputs("\\r", f); break;
                case '\t': fputs("\\t", f); break;
                default:
                        if (*p < 0x20)
                                fprintf(f, "\\u%04x", *p);
                        else    /* not part of valid UTF-8: U+FFFD keeps the line valid */
                                fputs("\xef\xbf\xbd", f);
                }
                run = ++p;
        }
        fwrite(run, 1, (size_t) (p - run), f);
        fputc('"', f);
}

/* ---- reading ---- */

typedef struct JsonCursor {
        const char *p, *end;
} JsonCursor;

static void json_skip_ws(JsonCursor *c) {
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
                c->p++;
}

static bool json_take(JsonCursor *c, char ch) {
        if (c->p >= c->end || *c->p != ch)
                return false;
        c->p++;
        return true;
}

static void utf8_put(char **p, uint32_t cp) {
        char *o = *p;

        if (cp < 0x80)
                *o++ = (char) cp;
        else if (cp < 0x800) {
                *o++ = (char) (0xc0 | (cp >> 6));
                *o++ = (char) (0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
                *o++ = (char) (0xe0 | (cp >> 12));
                *o++ = (char) (0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char) (0x80 | (cp & 0x3f));
        } else {
                *o++ = (char) (0xf0 | (cp >> 18));
                *o++ = (char) (0x80 | ((cp >> 12) & 0x3f));
                *o++ = (char) (0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char) (0x80 | (cp & 0x3f));
        }
        *p = o;
}

static int json_hex4(JsonCursor *c, uint32_t *ret) {
        uint32_t v = 0;

        if (c->end - c->p < 4)
                return -EBADMSG;
        for (int i = 0; i < 4; i++) {
                char ch = c->p[i];
                int d = ch >= '0' && ch <= '9' ? ch - '0' :
                        ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 :
                        ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;

                if (d < 0)
                        return -EBADMSG;
                v = v * 16 + (uint32_t) d;
        }
        c->p += 4;
        *ret = v;
        return 0;
}

/* After a backslash: one escape, written to *o. A lone surrogate or U+0000
 * is refused: the value must read back as the C string it was written from. */
static int json_escape_char(JsonCursor *c, char **o) {
        static const char simple_in[] = "\"\\/bfnrt", simple_out[] = "\"\\/\b\f\n\r\t";
        const char *s;
        uint32_t cp, lo;

        if (c->p >= c->end)
                return -EBADMSG;
        s = *c->p ? strchr(simple_in, *c->p) : NULL;
        if (s) {
                *(*o)++ = simple_out[s - simple_in];
                c->p++;
                return 0;
        }
        if (!json_take(c, 'u') || json_hex4(c, &cp) < 0)
                return -EBADMSG;
        if (cp >= 0xd800 && cp < 0xdc00) {
                if (!json_take(c, '\\') || !json_take(c, 'u') || json_hex4(c, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                        return -EBADMSG;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if ((cp >= 0xdc00 && cp < 0xe000) || cp == 0)
                return -EBADMSG;
        utf8_put(o, cp);
        return 0;
}

static int json_string(JsonCursor *c, char **ret) {
        _cleanup_free_ char *out = NULL;
        char *o;

        if (!json_take(c, '"'))
                return -EBADMSG;
        /* Every escape shrinks or keeps the length (\uXXXX: 6 bytes -> at most 4). */
        out = o = malloc((size_t) (c->end - c->p) + 1);
        if (!out)
                return -ENOMEM;
        for (;;) {
                if (c->p >= c->end)
                        return -EBADMSG;
                if (json_take(c, '"'))
                        break;
                if ((unsigned char) *c->p < 0x20)
                        return -EBADMSG;
                if (json_take(c, '\\')) {
                        if (json_escape_char(c, &o) < 0)
                                return -EBADMSG;
                        continue;
                }
                *o++ = *c->p++;
        }
        *o = 0;
        *ret = TAKE_PTR(out);
        return 0;
}

int json_parse_u64(const char *s, size_t len, uint64_t *ret) {
        uint64_t v = 0;

        if (len == 0 || len > 20)
                return -EBADMSG;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EBADMSG;
                if (v > (UINT64_MAX - (uint64_t) (s[i] - '0')) / 10)
                        return -EBADMSG;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

static bool word_is(const char *s, size_t len, const char *word) {
        return strlen(word) == len && memcmp(s, word, len) == 0;
}

static int json_scalar(JsonCursor *c, JsonValue *v) {
        const char *s = c->p;
        size_t len;

        while (c->p < c->end && (isalnum((unsigned char) *c->p) || *c->p == '-' || *c->p == '+' || *c->p == '.'))
                c->p++;
        len = (size_t) (c->p - s);
        if (word_is(s, len, "true"))
                v->type = JSON_TRUE;
        else if (word_is(s, len, "false"))
                v->type = JSON_FALSE;
        else if (word_is(s, len, "null"))
                v->type = JSON_NULL;
        else {
                v->type = JSON_NUMBER;
                return json_parse_u64(s, len, &v->number);
        }
        return 0;
}

static int json_member(JsonCursor *c, json_member_fn fn, void *userdata) {
        _cleanup_free_ char *key = NULL;
        JsonValue v = {};
        int r;

        json_skip_ws(c);
        r = json_string(c, &key);
        if (r < 0)
                return r;
        json_skip_ws(c);
        if (!json_take(c, ':'))
                return -EBADMSG;
        json_skip_ws(c);
        if (c->p < c->end && *c->p == '"') {
                v.type = JSON_STRING;
                r = json_string(c, &v.string);
        } else
                r = json_scalar(c, &v);
        if (r >= 0)
                r = fn(key, &v, userdata);
        free(v.string);
        return r;
}

int json_parse_flat_object(const char *text, size_t len, json_member_fn fn, void *userdata) {
        JsonCursor c = { text, text + len };
        int r;

        json_skip_ws(&c);
        if (!json_take(&c, '{'))
                return -EBADMSG;
        json_skip_ws(&c);
        if (!json_take(&c, '}'))
                for (;;) {
                        r = json_member(&c, fn, userdata);
                        if (r < 0)
                                return r;
                        json_skip_ws(&c);
                        if (json_take(&c, '}'))
                                break;
                        if (!json_take(&c, ','))
                                return -EBADMSG;
                }
        json_skip_ws(&c);
        return c.p == c.end ? 0 : -EBADMSG;
}
