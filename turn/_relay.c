/* The TURN relay's data plane over UDP: ChannelData between clients and peers, in C.
 *
 * turn/server.py decides everything (allocations, permissions, channels, lifetimes); what it has
 * decided for a channel is installed here as a route: the channel number, the peer's address and
 * the time until which the channel, its permission and its allocation all stand.  Datagrams that
 * match a route are relayed here without Python; every other datagram (STUN, Send and Data
 * indications, unknown channels, expired routes, malformed frames) is handed back to Python,
 * which handles it exactly as without this module (turn/fastpath.py is the Python side, and the
 * fallback when this module did not build).
 *
 *   Path(fd)                 one UDP listener: ``drain(now)`` reads up to BATCH datagrams with one
 *                            recvmmsg, sends each routed ChannelData to its peer from the
 *                            allocation's relay socket, and returns the rest as [(data, addr)].
 *   Route(fd, rate, burst, now)
 *                            one allocation's relay socket and its bandwidth bucket (bytes/s;
 *                            rate 0: no limit): ``drain(now)`` reads the relay socket, frames
 *                            routed datagrams as ChannelData and writes them to the client with
 *                            one sendmmsg on the listener, and returns the rest.  ``take(size,
 *                            now)`` is the bucket, shared with Python's slow path.
 *                            ``attach(path, sockaddr)`` names the UDP client, ``detach()`` forgets
 *                            it; ``channel(number, sockaddr, until)`` routes a channel;
 *                            ``unchannel(number)``; ``clear()``.
 *
 * Addresses are packed ``struct sockaddr_in`` or ``sockaddr_in6`` (turn/fastpath.py packs them).
 * Counters (read by the metrics at scrape time) are kept per Path.  The caller holds the GIL; no
 * Python code runs in here, so the static buffers are never used twice at once.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <structmember.h>

#define BATCH 64
#define MAX_DATAGRAM 65535
#define MAX_CHANNELS 16 /* routed per allocation; more are relayed by Python */
#define BUCKETS 4096    /* clients by address, chained */

static unsigned char buffers[BATCH][MAX_DATAGRAM];
static unsigned char headers[BATCH][4];
static struct sockaddr_storage names[BATCH];
static struct mmsghdr messages[BATCH];
static struct iovec vectors[BATCH][2];

typedef struct {
    int number; /* 0: a free slot */
    struct sockaddr_storage peer;
    socklen_t peer_size;
    double until;
} channel_t;

typedef struct RouteObject RouteObject;

typedef struct {
    PyObject_HEAD
    int fd;
    RouteObject *buckets[BUCKETS]; /* borrowed: a route unlinks itself when detached or freed */
    unsigned long long to_peer_packets, to_peer_bytes, to_client_packets, to_client_bytes;
    unsigned long long bandwidth, send_failed, receive_error, routes;
    /* reads that returned datagrams, and how many they returned: the batch sizes reached */
    unsigned long long listener_reads, listener_datagrams, relay_reads, relay_datagrams;
} PathObject;

struct RouteObject {
    PyObject_HEAD
    int fd;
    PathObject *path; /* a strong reference while attached */
    RouteObject *next; /* in the path's bucket */
    unsigned int hash;
    struct sockaddr_storage client;
    socklen_t client_size;
    double rate, burst, tokens, refilled;
    int channels_used;
    channel_t channels[MAX_CHANNELS];
};

static PyTypeObject PathType;
static PyTypeObject RouteType;

/* Addresses ------------------------------------------------------------------------------------ */

/* Whether two addresses are the same host and port (IPv6 flow information and scope ignored). */
static int
same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

static unsigned int
address_hash(const struct sockaddr_storage *a)
{
    const unsigned char *bytes;
    size_t size;
    uint16_t port;
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *six = (const struct sockaddr_in6 *)a;
        bytes = (const unsigned char *)&six->sin6_addr;
        size = sizeof(six->sin6_addr);
        port = six->sin6_port;
    } else {
        const struct sockaddr_in *four = (const struct sockaddr_in *)a;
        bytes = (const unsigned char *)&four->sin_addr;
        size = sizeof(four->sin_addr);
        port = four->sin_port;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        h = (h ^ bytes[i]) * 16777619u;
    h = (h ^ (port & 0xff)) * 16777619u;
    h = (h ^ (port >> 8)) * 16777619u;
    return h;
}

/* A packed sockaddr from Python into storage; -1 with an exception when it is not one. */
static int
read_address(PyObject *value, struct sockaddr_storage *out, socklen_t *size)
{
    if (!PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "a packed sockaddr (bytes) is expected");
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    const struct sockaddr *address = (const struct sockaddr *)PyBytes_AS_STRING(value);
    if (n == (Py_ssize_t)sizeof(struct sockaddr_in) && address->sa_family == AF_INET) {
    } else if (n == (Py_ssize_t)sizeof(struct sockaddr_in6) && address->sa_family == AF_INET6) {
    } else {
        PyErr_SetString(PyExc_ValueError, "not a packed sockaddr_in or sockaddr_in6");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, address, (size_t)n);
    *size = (socklen_t)n;
    return 0;
}

/* The (host, port) tuple Python's recvfrom would give (four items for IPv6). */
static PyObject *
address_tuple(const struct sockaddr_storage *a)
{
    char text[INET6_ADDRSTRLEN];
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *six = (const struct sockaddr_in6 *)a;
        if (inet_ntop(AF_INET6, &six->sin6_addr, text, sizeof(text)) == NULL)
            text[0] = 0;
        return Py_BuildValue("(siII)", text, (int)ntohs(six->sin6_port), (unsigned int)ntohl(six->sin6_flowinfo),
                             (unsigned int)six->sin6_scope_id);
    }
    const struct sockaddr_in *four = (const struct sockaddr_in *)a;
    if (a->ss_family != AF_INET || inet_ntop(AF_INET, &four->sin_addr, text, sizeof(text)) == NULL)
        text[0] = 0;
    return Py_BuildValue("(si)", text, (int)ntohs(four->sin_port));
}

/* Datagrams [i] of the batch handed back to Python as (data, addr). */
static int
hand_back(PyObject *list, int index)
{
    PyObject *data = PyBytes_FromStringAndSize((const char *)buffers[index], (Py_ssize_t)messages[index].msg_len);
    PyObject *addr = data ? address_tuple(&names[index]) : NULL;
    PyObject *item = addr ? PyTuple_Pack(2, data, addr) : NULL;
    Py_XDECREF(data);
    Py_XDECREF(addr);
    if (item == NULL)
        return -1;
    int status = PyList_Append(list, item);
    Py_DECREF(item);
    return status;
}

/* One recvmmsg of up to BATCH datagrams on fd: how many (0 when none, or on an error). */
static int
receive(int fd, unsigned long long *errors)
{
    for (int i = 0; i < BATCH; i++) {
        vectors[i][0].iov_base = buffers[i];
        vectors[i][0].iov_len = MAX_DATAGRAM;
        memset(&messages[i].msg_hdr, 0, sizeof(struct msghdr));
        messages[i].msg_hdr.msg_name = &names[i];
        messages[i].msg_hdr.msg_namelen = sizeof(names[i]);
        messages[i].msg_hdr.msg_iov = vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    for (;;) {
        int n = recvmmsg(fd, messages, BATCH, MSG_DONTWAIT, NULL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            (*errors)++;
        return 0;
    }
}

/* The bucket ----------------------------------------------------------------------------------- */

static int
take(RouteObject *route, double size, double now)
{
    if (route->rate <= 0)
        return 1;
    double tokens = route->tokens + (now - route->refilled) * route->rate;
    if (tokens > route->burst)
        tokens = route->burst;
    route->refilled = now;
    if (tokens < size) {
        route->tokens = tokens;
        return 0;
    }
    route->tokens = tokens - size;
    return 1;
}

/* Path ----------------------------------------------------------------------------------------- */

static RouteObject *
find_client(PathObject *path, const struct sockaddr_storage *address)
{
    unsigned int hash = address_hash(address);
    for (RouteObject *route = path->buckets[hash & (BUCKETS - 1)]; route != NULL; route = route->next)
        if (route->hash == hash && same_address(&route->client, address))
            return route;
    return NULL;
}

static void
unlink_route(RouteObject *route)
{
    PathObject *path = route->path;
    if (path == NULL)
        return;
    RouteObject **link = &path->buckets[route->hash & (BUCKETS - 1)];
    while (*link != NULL && *link != route)
        link = &(*link)->next;
    if (*link == route)
        *link = route->next;
    route->next = NULL;
    route->path = NULL;
    path->routes--;
    Py_DECREF(path);
}

static int
Path_init(PathObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i:Path", keywords, &fd))
        return -1;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "a socket's descriptor is expected");
        return -1;
    }
    self->fd = fd;
    return 0;
}

static void
Path_dealloc(PathObject *self)
{
    /* routes hold a strong reference while attached, so none is attached here */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Path_drain(PathObject *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    int n = receive(self->fd, &self->receive_error);
    if (n > 0) {
        self->listener_reads++;
        self->listener_datagrams += (unsigned long long)n;
    }
    PyObject *rest = PyList_New(0);
    if (rest == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        unsigned char *data = buffers[i];
        unsigned int length = messages[i].msg_len;
        RouteObject *route;
        if (length < 4 || data[0] < 0x40 || data[0] >= 0x80 || (route = find_client(self, &names[i])) == NULL)
            goto python;
        int number = (data[0] << 8) | data[1];
        unsigned int size = ((unsigned int)data[2] << 8) | data[3];
        if (size + 4 > length)
            goto python;
        channel_t *channel = NULL;
        for (int c = 0; c < route->channels_used; c++)
            if (route->channels[c].number == number) {
                channel = &route->channels[c];
                break;
            }
        if (channel == NULL || channel->until < now)
            goto python;
        if (!take(route, size, now)) {
            self->bandwidth++;
            continue;
        }
        ssize_t sent;
        do
            sent = sendto(route->fd, data + 4, size, MSG_DONTWAIT, (struct sockaddr *)&channel->peer, channel->peer_size);
        while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            self->send_failed++;
            continue;
        }
        self->to_peer_packets++;
        self->to_peer_bytes += size;
        continue;
    python:
        if (hand_back(rest, i) < 0) {
            Py_DECREF(rest);
            return NULL;
        }
    }
    return rest;
}

static PyObject *
Path_counters(PathObject *self, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsK}", "to_peer_packets", self->to_peer_packets, "to_peer_bytes", self->to_peer_bytes,
                         "to_client_packets", self->to_client_packets, "to_client_bytes", self->to_client_bytes,
                         "bandwidth", self->bandwidth, "send_failed", self->send_failed, "receive_error", self->receive_error,
                         "routes", self->routes, "listener_reads", self->listener_reads, "listener_datagrams", self->listener_datagrams,
                         "relay_reads", self->relay_reads, "relay_datagrams", self->relay_datagrams);
}

static PyMethodDef Path_methods[] = {
    {"drain", (PyCFunction)Path_drain, METH_O, "drain(now) -> [(data, addr)] not relayed here"},
    {"counters", (PyCFunction)Path_counters, METH_NOARGS, "counters() -> dict of this listener's relayed packets"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Path_members[] = {
    {"fd", T_INT, offsetof(PathObject, fd), READONLY, "the listener's descriptor"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject PathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "turn._relay.Path",
    .tp_basicsize = sizeof(PathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "One UDP listener's routed ChannelData",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Path_init,
    .tp_dealloc = (destructor)Path_dealloc,
    .tp_methods = Path_methods,
    .tp_members = Path_members,
};

/* Route ---------------------------------------------------------------------------------------- */

static int
Route_init(RouteObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "rate", "burst", "now", NULL};
    int fd;
    double rate, burst, now;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iddd:Route", keywords, &fd, &rate, &burst, &now))
        return -1;
    if (fd < 0 || rate < 0 || burst < 0) {
        PyErr_SetString(PyExc_ValueError, "a descriptor, and a rate and burst of at least 0, are expected");
        return -1;
    }
    unlink_route(self);
    self->fd = fd;
    self->rate = rate;
    self->burst = burst;
    self->tokens = burst;
    self->refilled = now;
    self->channels_used = 0;
    return 0;
}

static void
Route_dealloc(RouteObject *self)
{
    unlink_route(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Route_attach(RouteObject *self, PyObject *args)
{
    PyObject *path, *address;
    if (!PyArg_ParseTuple(args, "O!O:attach", &PathType, &path, &address))
        return NULL;
    struct sockaddr_storage client;
    socklen_t size;
    if (read_address(address, &client, &size) < 0)
        return NULL;
    PathObject *target = (PathObject *)path;
    RouteObject *other = find_client(target, &client);
    if (other != NULL && other != self) {
        PyErr_SetString(PyExc_ValueError, "another route has this client address on this path");
        return NULL;
    }
    unlink_route(self);
    self->client = client;
    self->client_size = size;
    self->hash = address_hash(&client);
    Py_INCREF(target);
    self->path = target;
    RouteObject **bucket = &target->buckets[self->hash & (BUCKETS - 1)];
    self->next = *bucket;
    *bucket = self;
    target->routes++;
    Py_RETURN_NONE;
}

static PyObject *
Route_detach(RouteObject *self, PyObject *unused)
{
    (void)unused;
    unlink_route(self);
    Py_RETURN_NONE;
}

static PyObject *
Route_channel(RouteObject *self, PyObject *args)
{
    int number;
    PyObject *address;
    double until;
    if (!PyArg_ParseTuple(args, "iOd:channel", &number, &address, &until))
        return NULL;
    if (number < 0x4000 || number > 0x7FFF) {
        PyErr_SetString(PyExc_ValueError, "channel numbers are 0x4000-0x7FFF");
        return NULL;
    }
    struct sockaddr_storage peer;
    socklen_t size;
    if (read_address(address, &peer, &size) < 0)
        return NULL;
    channel_t *slot = NULL;
    for (int c = 0; c < self->channels_used; c++)
        if (self->channels[c].number == number) {
            slot = &self->channels[c];
            break;
        }
    if (slot == NULL) {
        if (self->channels_used == MAX_CHANNELS)
            Py_RETURN_FALSE; /* Python relays this channel */
        slot = &self->channels[self->channels_used++];
    }
    slot->number = number;
    slot->peer = peer;
    slot->peer_size = size;
    slot->until = until;
    Py_RETURN_TRUE;
}

static PyObject *
Route_unchannel(RouteObject *self, PyObject *arg)
{
    long number = PyLong_AsLong(arg);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    for (int c = 0; c < self->channels_used; c++)
        if (self->channels[c].number == number) {
            self->channels[c] = self->channels[--self->channels_used];
            Py_RETURN_TRUE;
        }
    Py_RETURN_FALSE;
}

static PyObject *
Route_clear(RouteObject *self, PyObject *unused)
{
    (void)unused;
    self->channels_used = 0;
    Py_RETURN_NONE;
}

static PyObject *
Route_take(RouteObject *self, PyObject *args)
{
    double size, now;
    if (!PyArg_ParseTuple(args, "dd:take", &size, &now))
        return NULL;
    return PyBool_FromLong(take(self, size, now));
}

/* Write messages [0, used) to the client with sendmmsg; a refused message is skipped. */
static void
write_to_client(PathObject *path, int used)
{
    int sent = 0;
    while (sent < used) {
        int n = sendmmsg(path->fd, messages + sent, (unsigned int)(used - sent), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            path->send_failed++;
            sent++;
            continue;
        }
        for (int i = sent; i < sent + n; i++) {
            path->to_client_packets++;
            path->to_client_bytes += messages[i].msg_len - 4;
        }
        sent += n;
    }
}

static PyObject *
Route_drain(RouteObject *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    PathObject *path = self->path;
    unsigned long long errors = 0;
    int n = receive(self->fd, path ? &path->receive_error : &errors);
    if (path != NULL && n > 0) {
        path->relay_reads++;
        path->relay_datagrams += (unsigned long long)n;
    }
    PyObject *rest = PyList_New(0);
    if (rest == NULL)
        return NULL;
    /* Routed datagrams are framed in place: message [used] reuses the slot of datagram [i >= used]
       only after datagram [i] was read, so the buffers stay where they are and the headers and
       addresses are rewritten in slot order. */
    int used = 0;
    for (int i = 0; i < n; i++) {
        unsigned int length = messages[i].msg_len;
        channel_t *channel = NULL;
        if (path != NULL && length <= 0xFFFF) {
            for (int c = 0; c < self->channels_used; c++)
                if (same_address(&self->channels[c].peer, &names[i])) {
                    channel = &self->channels[c];
                    break;
                }
        }
        if (channel == NULL || channel->until < now) {
            if (hand_back(rest, i) < 0) {
                Py_DECREF(rest);
                return NULL;
            }
            continue;
        }
        if (!take(self, length, now)) {
            path->bandwidth++;
            continue;
        }
        headers[used][0] = (unsigned char)(channel->number >> 8);
        headers[used][1] = (unsigned char)(channel->number & 0xff);
        headers[used][2] = (unsigned char)(length >> 8);
        headers[used][3] = (unsigned char)(length & 0xff);
        vectors[used][0].iov_base = headers[used];
        vectors[used][0].iov_len = 4;
        vectors[used][1].iov_base = buffers[i];
        vectors[used][1].iov_len = length;
        memset(&messages[used].msg_hdr, 0, sizeof(struct msghdr));
        messages[used].msg_hdr.msg_name = &self->client;
        messages[used].msg_hdr.msg_namelen = self->client_size;
        messages[used].msg_hdr.msg_iov = vectors[used];
        messages[used].msg_hdr.msg_iovlen = 2;
        messages[used].msg_len = 0;
        used++;
    }
    if (used > 0)
        write_to_client(path, used);
    return rest;
}

static PyObject *
Route_get_attached(RouteObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->path != NULL);
}

static PyObject *
Route_get_channels(RouteObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->channels_used);
}

static PyMethodDef Route_methods[] = {
    {"attach", (PyCFunction)Route_attach, METH_VARARGS, "attach(path, sockaddr): the UDP client of this allocation"},
    {"detach", (PyCFunction)Route_detach, METH_NOARGS, "detach(): no client is routed"},
    {"channel", (PyCFunction)Route_channel, METH_VARARGS, "channel(number, sockaddr, until) -> False when full"},
    {"unchannel", (PyCFunction)Route_unchannel, METH_O, "unchannel(number) -> whether it was routed"},
    {"clear", (PyCFunction)Route_clear, METH_NOARGS, "clear(): no channel is routed"},
    {"take", (PyCFunction)Route_take, METH_VARARGS, "take(size, now) -> whether the bucket lets size bytes through"},
    {"drain", (PyCFunction)Route_drain, METH_O, "drain(now) -> [(data, addr)] not relayed here"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Route_getset[] = {
    {"attached", (getter)Route_get_attached, NULL, "whether a UDP client is routed", NULL},
    {"channels", (getter)Route_get_channels, NULL, "routed channels", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Route_members[] = {
    {"fd", T_INT, offsetof(RouteObject, fd), READONLY, "the relay socket's descriptor"},
    {"tokens", T_DOUBLE, offsetof(RouteObject, tokens), READONLY, "bytes the bucket holds"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "turn._relay.Route",
    .tp_basicsize = sizeof(RouteObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "One allocation's relay socket, routed channels and bandwidth bucket",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Route_init,
    .tp_dealloc = (destructor)Route_dealloc,
    .tp_methods = Route_methods,
    .tp_getset = Route_getset,
    .tp_members = Route_members,
};

/* Module --------------------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "turn._relay", "The TURN relay's routed ChannelData in C (see turn/fastpath.py)", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__relay(void)
{
    if (PyType_Ready(&PathType) < 0 || PyType_Ready(&RouteType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PathType);
    Py_INCREF(&RouteType);
    if (PyModule_AddObject(m, "Path", (PyObject *)&PathType) < 0 || PyModule_AddObject(m, "Route", (PyObject *)&RouteType) < 0
        || PyModule_AddIntConstant(m, "BATCH", BATCH) < 0 || PyModule_AddIntConstant(m, "MAX_CHANNELS", MAX_CHANNELS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
