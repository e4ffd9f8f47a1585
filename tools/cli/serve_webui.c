/* serve_webui.c — the chat page and its Content-Security-Policy; see serve_webui.h. */
#include "serve_webui.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* generated from tools/cli/webui/index.html by cmake/embed_file.cmake */
extern const unsigned char serve_webui_page_bytes[];
extern const size_t serve_webui_page_bytes_len;

/* The text between "<tag>" and "</tag>" (the first such element outside
 * HTML comments), as the browser hashes it for a CSP source 'sha256-...':
 * the exact bytes. */
static bool element_body(const char *page, const char *tag, const char **body, size_t *len) {
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *p = page;
    for (;;) {
        const char *start = strstr(p, open), *comment = strstr(p, "<!--");
        if (!start) return false;
        if (comment && comment < start) {
            const char *end = strstr(comment + 4, "-->");
            if (!end) return false;
            p = end + 3;
            continue;
        }
        start += strlen(open);
        const char *end = strstr(start, close);
        if (!end) return false;
        *body = start;
        *len = (size_t)(end - start);
        return true;
    }
}

/* "'sha256-<base64>'" of n bytes into out (at least 56 bytes). */
static void csp_hash(const char *bytes, size_t n, char *out) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)bytes, n, digest);
    char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1]; /* 44 characters and a 0 */
    EVP_EncodeBlock((unsigned char *)b64, digest, SHA256_DIGEST_LENGTH);
    sprintf(out, "'sha256-%s'", b64);
}

bool serve_webui_init(serve_webui *w, char *msg, size_t msg_size) {
    w->page = (const char *)serve_webui_page_bytes;
    w->len = serve_webui_page_bytes_len;
    const char *style, *script;
    size_t n_style, n_script;
    if (!element_body(w->page, "style", &style, &n_style) ||
        !element_body(w->page, "script", &script, &n_script)) {
        snprintf(msg, msg_size, "the built-in chat page has no <style> or no <script> element");
        return false;
    }
    char style_hash[64], script_hash[64];
    csp_hash(style, n_style, style_hash);
    csp_hash(script, n_script, script_hash);
    /* default-src 'none' refuses whatever is not named below; connect-src
     * 'self' lets the page call the API of the server (or proxy) it came from */
    snprintf(w->csp, sizeof w->csp,
             "default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
             script_hash, style_hash);
    return true;
}
