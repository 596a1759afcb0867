/* gateway/demo_page.h - the demo page (web/index.html), embedded at build time by tools/embed.py
 * so the binary serves it from any working directory. */
#ifndef CHAT_GATEWAY_DEMO_PAGE_H
#define CHAT_GATEWAY_DEMO_PAGE_H

#include <stddef.h>

extern const char gw_demo_page[];
extern const size_t gw_demo_page_len;

#endif
