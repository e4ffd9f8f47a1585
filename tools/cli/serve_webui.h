/*
 * serve_webui.h — the chat page that `trimlm serve` answers at / (the file
 * tools/cli/webui/index.html, compiled into the binary), and the
 * Content-Security-Policy it is sent with.
 *
 * The page is one HTML file with one inline <style> and one inline <script>.
 * The policy allows exactly those two, by their SHA-256 hashes, and requests
 * to the page's own origin; everything else (other scripts, other origins,
 * frames, forms, plugins) is refused by the browser.
 */
#ifndef TLM_SERVE_WEBUI_H
#define TLM_SERVE_WEBUI_H

#include <stdbool.h>
#include <stddef.h>

typedef struct serve_webui {
    const char *page; /* the HTML, len bytes (static) */
    size_t len;
    char csp[512];    /* the Content-Security-Policy header's value */
} serve_webui;

/* Fills w. False (with the reason in msg, msg_size bytes) when the built-in
 * page lacks its <style> or <script>: a build that is broken, not bad input. */
bool serve_webui_init(serve_webui *w, char *msg, size_t msg_size);

#endif
