/* gateway/main.c - the chat-gateway binary: gw_main() (gateway/run.c) with the chat app. */
#include "chat.h"
#include "run.h"

int main(int argc, char **argv)
{
    return gw_main(argc, argv, &gw_chat_app);
}
