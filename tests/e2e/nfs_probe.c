/* A raw NFS client for the end-to-end test (tests/e2e/shares.rs): connects to ADDR:PORT
 * from LOCAL_PORT (a reserved port, as a privileged process or a container with Docker's
 * default capabilities can bind), sends its standard input, half-closes, and copies the
 * reply to standard output. busybox nc cannot do this: it ignores -p when it connects.
 * Built statically by the test so that it runs in a container without any library.
 *
 * Exit status: 0 connected (the reply, if any, on stdout), 2 connection refused, 1 any
 * other failure (the reason on stderr). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: nfs-probe ADDR PORT LOCAL_PORT\n");
		return 1;
	}
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0) {
		perror("socket");
		return 1;
	}
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	/* Linux bounds connect() by the send timeout. */
	struct timeval tv = { 10, 0 };
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	struct sockaddr_in local;
	memset(&local, 0, sizeof local);
	local.sin_family = AF_INET;
	local.sin_port = htons((unsigned short)atoi(argv[3]));
	if (bind(s, (struct sockaddr *)&local, sizeof local) < 0) {
		perror("bind");
		return 1;
	}
	struct sockaddr_in peer;
	memset(&peer, 0, sizeof peer);
	peer.sin_family = AF_INET;
	peer.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) {
		fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
		return 1;
	}
	if (connect(s, (struct sockaddr *)&peer, sizeof peer) < 0) {
		int refused = errno == ECONNREFUSED;
		perror("connect");
		return refused ? 2 : 1;
	}
	char buf[4096];
	ssize_t n;
	while ((n = read(0, buf, sizeof buf)) > 0) {
		if (write(s, buf, (size_t)n) != n) {
			perror("send");
			return 1;
		}
	}
	shutdown(s, SHUT_WR);
	while ((n = read(s, buf, sizeof buf)) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	if (n < 0) {
		perror("recv");
		return 1;
	}
	return 0;
}
