/* common/names.h - validation of the names clients choose (rooms) and of history epochs. Pure functions. */
#ifndef CHAT_COMMON_NAMES_H
#define CHAT_COMMON_NAMES_H

#include "str.h"

#define CHAT_ROOM_NAME_MAX 64

/* 1 when `name` is a valid room name: 1..64 bytes of A-Z a-z 0-9 . _ - : @ ; else 0. */
int chat_room_name_valid(chat_str_t name);

/* A room history's epoch (broker/broker.h): 1..CHAT_EPOCH_MAX bytes of A-Z a-z 0-9 _ - */
#define CHAT_EPOCH_MAX 32
int chat_epoch_valid(chat_str_t epoch);

#endif
