/* gateway/main.c - the chat-gateway binary: gw_main() with the chat protocol (gateway/run.c). */
#include "run.h"

int main(int argc, char **argv)
{
    return gw_main(argc, argv, 0);
}
