/* common/names.c - room name and epoch rules (see names.h and docs/protocol.md). */
#include "names.h"

int chat_room_name_valid(chat_str_t name)
{
    if (name.p == NULL || name.len == 0 || name.len > CHAT_ROOM_NAME_MAX)
        return 0;
    for (size_t i = 0; i < name.len; i++) {
        unsigned char c = (unsigned char)name.p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (c == '.' || c == '_' || c == '-' || c == ':' || c == '@')
            continue;
        return 0;
    }
    return 1;
}

int chat_epoch_valid(chat_str_t epoch)
{
    if (epoch.p == NULL || epoch.len == 0 || epoch.len > CHAT_EPOCH_MAX)
        return 0;
    for (size_t i = 0; i < epoch.len; i++) {
        unsigned char c = (unsigned char)epoch.p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '-')
            continue;
        return 0;
    }
    return 1;
}
