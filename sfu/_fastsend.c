/* The innermost loop of forwarding: protect copies with SRTP and write them with sendmmsg.
 *
 * ``send(protect, items)`` takes the address of libsrtp's ``srtp_protect`` (from pylibsrtp's
 * own build, so the sessions it protects with are the ones aiortc keyed) and a list of copies,
 * each ``(fd, session, sockaddr, packet, ...)`` (what follows is the caller's):
 *   fd        a non-blocking UDP socket's descriptor
 *   session   the ``srtp_t`` of the subscriber's transport, as an integer
 *   sockaddr  the destination as a packed ``struct sockaddr_in`` or ``sockaddr_in6``
 *   packet    the plain RTP packet
 * Each packet is copied into a buffer of this module and protected there; runs of copies on one
 * descriptor leave in one ``sendmmsg``.  It returns the number of copies when every one was
 * written; otherwise a list with one entry per copy: None (written), the protected bytes (not
 * written: the socket would block or refused it; the caller queues them on its transport), or
 * an int (libsrtp's error for a copy that could not be protected, or -1 for a malformed item).
 *
 * The caller holds the GIL throughout and must keep every session alive for the call (the
 * sessions' owners are referenced by the caller's objects, and no Python code runs in here).
 * sfu/fastsend.py is the Python side and the fallback when this module did not build.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stddef.h>
#include <structmember.h>
#include <time.h>

#define BATCH 64
#define BUFFER 2048 /* sfu.aiortc_hooks.SRTP_BUFFER_BYTES: the SFU's sessions are widened to it */
#define MAX_TRAILER 144 /* libsrtp's SRTP_MAX_TRAILER_LEN: tag and MKI */

typedef int (*protect_fn)(void *session, void *packet, int *length);

static unsigned char buffers[BATCH][BUFFER];
static struct mmsghdr messages[BATCH];
static struct iovec vectors[BATCH];
static Py_ssize_t positions[BATCH];

/* The list of results, made on the first copy that was not written. */
static int
mark(PyObject **results, Py_ssize_t count, Py_ssize_t index, PyObject *value)
{
    if (value == NULL)
        return -1;
    if (*results == NULL) {
        *results = PyList_New(count);
        if (*results == NULL) {
            Py_DECREF(value);
            return -1;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(*results, i, Py_None);
        }
    }
    PyObject *old = PyList_GET_ITEM(*results, index);
    PyList_SET_ITEM(*results, index, value);
    Py_DECREF(old);
    return 0;
}

/* Write messages [0, used) on fd with sendmmsg; how many left (it stops at the first refusal:
   the socket would block, or refused a message). */
static int
write_messages(int fd, int used)
{
    int sent = 0;
    while (sent < used) {
        int n = sendmmsg(fd, messages + sent, (unsigned int)(used - sent), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (n == 0)
            break;
        sent += n;
    }
    return sent;
}

/* Write messages [0, used) on fd; what is left unwritten becomes protected bytes in results. */
static int
flush(int fd, int used, PyObject **results, Py_ssize_t count)
{
    int sent = write_messages(fd, used);
    for (int i = sent; i < used; i++) {
        PyObject *left = PyBytes_FromStringAndSize((const char *)buffers[i], (Py_ssize_t)vectors[i].iov_len);
        if (mark(results, count, positions[i], left) < 0)
            return -1;
    }
    return 0;
}

static PyObject *
fastsend_send(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *protect_address, *items;
    if (!PyArg_ParseTuple(args, "OO!:send", &protect_address, &PyList_Type, &items))
        return NULL;
    protect_fn protect = (protect_fn)PyLong_AsVoidPtr(protect_address);
    if (protect == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no srtp_protect address");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(items);
    PyObject *results = NULL;
    int used = 0, fd = -1;
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *item = PyList_GET_ITEM(items, index);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 4) {
            if (mark(&results, count, index, PyLong_FromLong(-1)) < 0)
                goto error;
            continue;
        }
        PyObject *address = PyTuple_GET_ITEM(item, 2), *packet = PyTuple_GET_ITEM(item, 3);
        long item_fd = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        void *session = PyLong_AsVoidPtr(PyTuple_GET_ITEM(item, 1));
        if (PyErr_Occurred())
            PyErr_Clear();
        Py_ssize_t size = PyBytes_Check(packet) ? PyBytes_GET_SIZE(packet) : -1;
        Py_ssize_t address_size = PyBytes_Check(address) ? PyBytes_GET_SIZE(address) : 0;
        if (item_fd < 0 || item_fd > 0x7fffffff || session == NULL || size < 12 || size > BUFFER - MAX_TRAILER
            || address_size < (Py_ssize_t)sizeof(struct sockaddr_in) || address_size > (Py_ssize_t)sizeof(struct sockaddr_in6)) {
            if (mark(&results, count, index, PyLong_FromLong(-1)) < 0)
                goto error;
            continue;
        }
        if (used == BATCH || (used > 0 && (int)item_fd != fd)) {
            if (flush(fd, used, &results, count) < 0)
                goto error;
            used = 0;
        }
        fd = (int)item_fd;
        memcpy(buffers[used], PyBytes_AS_STRING(packet), (size_t)size);
        int length = (int)size;
        int status = protect(session, buffers[used], &length);
        if (status != 0 || length < 0 || length > BUFFER) {
            if (mark(&results, count, index, PyLong_FromLong(status ? status : -1)) < 0)
                goto error;
            continue;
        }
        vectors[used].iov_base = buffers[used];
        vectors[used].iov_len = (size_t)length;
        memset(&messages[used].msg_hdr, 0, sizeof(struct msghdr));
        /* the address bytes live as long as the item, which outlives the flush below */
        messages[used].msg_hdr.msg_name = PyBytes_AS_STRING(address);
        messages[used].msg_hdr.msg_namelen = (socklen_t)address_size;
        messages[used].msg_hdr.msg_iov = &vectors[used];
        messages[used].msg_hdr.msg_iovlen = 1;
        positions[used] = index;
        used++;
    }
    if (used > 0 && flush(fd, used, &results, count) < 0)
        goto error;
    if (results != NULL)
        return results;
    return PyLong_FromSsize_t(count);
error:
    Py_XDECREF(results);
    return NULL;
}

/* unprotect(srtp_unprotect address, session, packet) -> the plain packet (bytes), or libsrtp's
 * error (an int) for a packet that fails authentication, replays or is malformed. */
static PyObject *
fastsend_unprotect(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *unprotect_address, *session_address;
    const char *data;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OOy#:unprotect", &unprotect_address, &session_address, &data, &size))
        return NULL;
    protect_fn unprotect = (protect_fn)PyLong_AsVoidPtr(unprotect_address);
    void *session = PyLong_AsVoidPtr(session_address);
    if (unprotect == NULL || session == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no srtp_unprotect or session address");
        return NULL;
    }
    if (size < 12 || size > BUFFER)
        return PyLong_FromLong(-1);
    unsigned char packet[BUFFER];
    memcpy(packet, data, (size_t)size);
    int length = (int)size;
    int status = unprotect(session, packet, &length);
    if (status != 0)
        return PyLong_FromLong(status);
    if (length < 0 || length > size)
        return PyLong_FromLong(-1);
    return PyBytes_FromStringAndSize((const char *)packet, length);
}

/* ---- Lanes: the steady copies of a subscriber, decided and written without Python ----------
 *
 * A Lane holds what one down-track needs to forward the packets of its current layer while
 * nothing about it changes (sfu/forwarding.py lends it the Python state and takes it back):
 * the sequence/timestamp mapping of its munger's newest segment, the RTP header template, its
 * SRTP session and the socket address, and counters Python reads back at each tick.
 * ``fan_out`` maps, writes the header, protects and queues a copy for every armed lane of a
 * packet; a lane whose packet is not the plain case (before the start point or the segment,
 * too late, a jump, its connection no longer connected, its socket's transport closing or
 * holding a queue) is disarmed and returned: Python takes it back and forwards that copy. */

#define MAX_LATE 1000    /* sfu.munger.MAX_LATE */
#define MAX_DROPOUT 3000 /* sfu.munger.MAX_DROPOUT */
#define TEMPLATE 64

typedef struct {
    PyObject_HEAD
    int armed;
    int fd;
    PyObject *session_owner; /* the pylibsrtp Session: kept alive while its pointer is used */
    void *session;
    unsigned char sockaddr[sizeof(struct sockaddr_in6)];
    int sockaddr_len;
    /* checked for every packet: dtls._state is connected, connection._nominated.get(1) is
       pair, the socket's transport is not closing (its descriptor may soon be another
       socket's) and holds no queue, and with udp_port the connection's view of the shared
       socket (muxed) is not closed */
    PyObject *dtls, *connected, *under, *muxed, *connection, *pair;
    /* header: fixed part, then templates (extension blocks with slots) without/with a level */
    int payload_type;
    int max_tid; /* the temporal cap: a packet of a higher VP8 temporal layer goes to Python */
    unsigned long ssrc;
    unsigned char first[2];
    unsigned char block[2][TEMPLATE];
    int block_len[2], abs_at[2], level_at[2], has_level_template;
    /* the munger's newest segment and where its output stands */
    long long start_seq, seg_first, seg_offset, ts_offset, last_out_seq, last_out_ts, highest_in;
    int has_last_out;
    /* since Python last read them */
    long long packets, octets, plain_bytes, protected_bytes;
    unsigned long long last_ntp;
    long long last_rtp_ts;
    int frame_open;
    double last_sent_at;
    long long last_picture, last_tl0;
    int has_picture, has_tl0;
    PyObject *owner; /* the down-track (Python's) */
} Lane;

static double
seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Write the lanes' messages [0, used) on fd; what is left becomes (lane, protected bytes).  The
   copies written and when (seconds since ``start``) are appended to ``*flushes``. */
static int
flush_lanes(int fd, int used, Lane **lanes, PyObject **unsent, long *sent_total, PyObject **flushes, const struct timespec *start)
{
    int sent = write_messages(fd, used);
    *sent_total += sent;
    if (sent > 0) {
        if (*flushes == NULL && (*flushes = PyList_New(0)) == NULL)
            return -1;
        PyObject *when = Py_BuildValue("(id)", sent, seconds_since(start));
        if (when == NULL)
            return -1;
        int failed = PyList_Append(*flushes, when);
        Py_DECREF(when);
        if (failed < 0)
            return -1;
    }
    for (int i = sent; i < used; i++) {
        if (*unsent == NULL && (*unsent = PyList_New(0)) == NULL)
            return -1;
        PyObject *left = Py_BuildValue("(Oy#)", (PyObject *)lanes[i], (const char *)buffers[i], (Py_ssize_t)vectors[i].iov_len);
        if (left == NULL)
            return -1;
        int failed = PyList_Append(*unsent, left);
        Py_DECREF(left);
        if (failed < 0)
            return -1;
    }
    return 0;
}

static PyObject *str_state, *str_closing, *str_nominated, *str_is_closing, *str_queued, *one;

/* A lane and its owner (the down-track) refer to each other: the cycle collector must see it. */
static int
lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session_owner);
    Py_VISIT(self->dtls);
    Py_VISIT(self->connected);
    Py_VISIT(self->under);
    Py_VISIT(self->muxed);
    Py_VISIT(self->connection);
    Py_VISIT(self->pair);
    Py_VISIT(self->owner);
    return 0;
}

static int
lane_clear(Lane *self)
{
    self->armed = 0;
    self->session = NULL;
    Py_CLEAR(self->session_owner);
    Py_CLEAR(self->dtls);
    Py_CLEAR(self->connected);
    Py_CLEAR(self->under);
    Py_CLEAR(self->muxed);
    Py_CLEAR(self->connection);
    Py_CLEAR(self->pair);
    Py_CLEAR(self->owner);
    return 0;
}

static void
lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* route(fd, session_owner, session, sockaddr, dtls, connected, under, muxed or None, connection, pair) */
static PyObject *
lane_route(Lane *self, PyObject *args)
{
    int fd;
    PyObject *owner, *session, *dtls, *connected, *under, *muxed, *connection, *pair;
    const char *address;
    Py_ssize_t address_len;
    if (!PyArg_ParseTuple(args, "iOOy#OOOOOO:route", &fd, &owner, &session, &address, &address_len, &dtls, &connected,
                          &under, &muxed, &connection, &pair))
        return NULL;
    void *pointer = PyLong_AsVoidPtr(session);
    if (pointer == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no session");
        return NULL;
    }
    if (fd < 0 || address_len < (Py_ssize_t)sizeof(struct sockaddr_in) || address_len > (Py_ssize_t)sizeof(struct sockaddr_in6)) {
        PyErr_SetString(PyExc_ValueError, "a bad descriptor or socket address");
        return NULL;
    }
    self->fd = fd;
    self->session = pointer;
    memcpy(self->sockaddr, address, (size_t)address_len);
    self->sockaddr_len = (int)address_len;
    Py_INCREF(owner);
    Py_XSETREF(self->session_owner, owner);
    Py_INCREF(dtls);
    Py_XSETREF(self->dtls, dtls);
    Py_INCREF(connected);
    Py_XSETREF(self->connected, connected);
    Py_INCREF(under);
    Py_XSETREF(self->under, under);
    Py_INCREF(muxed);
    Py_XSETREF(self->muxed, muxed);
    Py_INCREF(connection);
    Py_XSETREF(self->connection, connection);
    Py_INCREF(pair);
    Py_XSETREF(self->pair, pair);
    Py_RETURN_NONE;
}

/* template(levelled, first, block, abs_at, level_at): an extension block (zeros in its slots),
   the offsets of the abs-send-time (3 bytes) and audio-level (1 byte) slots in it, or -1 */
static PyObject *
lane_template(Lane *self, PyObject *args)
{
    int levelled, first, abs_at, level_at;
    const char *block;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "iiy#ii:template", &levelled, &first, &block, &length, &abs_at, &level_at))
        return NULL;
    if (levelled < 0 || levelled > 1 || length > TEMPLATE || first < 0 || first > 255 || abs_at < -1
        || (abs_at >= 0 && abs_at + 3 > length) || level_at < -1 || (level_at >= 0 && level_at + 1 > length)) {
        PyErr_SetString(PyExc_ValueError, "a bad header template");
        return NULL;
    }
    self->first[levelled] = (unsigned char)first;
    memcpy(self->block[levelled], block, (size_t)length);
    self->block_len[levelled] = (int)length;
    self->abs_at[levelled] = abs_at;
    self->level_at[levelled] = level_at;
    if (levelled)
        self->has_level_template = level_at >= 0;
    Py_RETURN_NONE;
}

/* take() -> (packets, octets, plain_bytes, protected_bytes): the counters since the last take, reset */
static PyObject *
lane_take(Lane *self, PyObject *unused)
{
    (void)unused;
    PyObject *counts = Py_BuildValue("(LLLL)", self->packets, self->octets, self->plain_bytes, self->protected_bytes);
    if (counts != NULL)
        self->packets = self->octets = self->plain_bytes = self->protected_bytes = 0;
    return counts;
}

static PyMethodDef lane_methods[] = {
    {"route", (PyCFunction)lane_route, METH_VARARGS, "Where copies go and what must hold for them to."},
    {"template", (PyCFunction)lane_template, METH_VARARGS, "A header template, without (0) or with (1) an audio level."},
    {"take", (PyCFunction)lane_take, METH_NOARGS, "The counters since the last take, reset."},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(name, type) {#name, type, offsetof(Lane, name), 0, NULL}
static PyMemberDef lane_members[] = {
    MEMBER(armed, T_INT),
    MEMBER(payload_type, T_INT),
    MEMBER(max_tid, T_INT),
    MEMBER(ssrc, T_ULONG),
    MEMBER(start_seq, T_LONGLONG),
    MEMBER(seg_first, T_LONGLONG),
    MEMBER(seg_offset, T_LONGLONG),
    MEMBER(ts_offset, T_LONGLONG),
    MEMBER(last_out_seq, T_LONGLONG),
    MEMBER(last_out_ts, T_LONGLONG),
    MEMBER(highest_in, T_LONGLONG),
    MEMBER(has_last_out, T_INT),
    MEMBER(last_ntp, T_ULONGLONG),
    MEMBER(last_rtp_ts, T_LONGLONG),
    MEMBER(frame_open, T_INT),
    MEMBER(last_sent_at, T_DOUBLE),
    MEMBER(last_picture, T_LONGLONG),
    MEMBER(last_tl0, T_LONGLONG),
    MEMBER(has_picture, T_INT),
    MEMBER(has_tl0, T_INT),
    MEMBER(owner, T_OBJECT),
    {"pending_packets", T_LONGLONG, offsetof(Lane, packets), READONLY, "copies sent since the last take()"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fastsend.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The steady copies of one down-track (see sfu/forwarding.py, DownTrack.arm_lane).",
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_methods = lane_methods,
    .tp_members = lane_members,
    .tp_new = PyType_GenericNew,
};

/* Whether the lane's connection still stands: 1 yes, 0 no, -1 error.  ``*clear`` is the
   socket transport last found neither closing nor queueing in this fan_out (with udp_port,
   every lane's is the same shared one: asked once per packet, not once per copy). */
static int
lane_connected(Lane *lane, PyObject **clear)
{
    if (lane->dtls == NULL || lane->under == NULL || lane->muxed == NULL || lane->connection == NULL)
        return 0;
    PyObject *state = PyObject_GetAttr(lane->dtls, str_state);
    if (state == NULL)
        return -1;
    int ok = state == lane->connected;
    Py_DECREF(state);
    if (!ok)
        return 0;
    if (lane->muxed != Py_None) {
        PyObject *closing = PyObject_GetAttr(lane->muxed, str_closing);
        if (closing == NULL)
            return -1;
        ok = closing == Py_False;
        Py_DECREF(closing);
        if (!ok)
            return 0;
    }
    if (lane->under != *clear) {
        PyObject *closing = PyObject_CallMethodNoArgs(lane->under, str_is_closing);
        if (closing == NULL)
            return -1;
        ok = closing == Py_False;
        Py_DECREF(closing);
        if (!ok)
            return 0;
        PyObject *queued = PyObject_CallMethodNoArgs(lane->under, str_queued);
        if (queued == NULL)
            return -1;
        long size = PyLong_Check(queued) ? PyLong_AsLong(queued) : -1;
        Py_DECREF(queued);
        if (size != 0) {
            PyErr_Clear();
            return 0;
        }
        *clear = lane->under;
    }
    PyObject *nominated = PyObject_GetAttr(lane->connection, str_nominated);
    if (nominated == NULL)
        return -1;
    ok = PyDict_Check(nominated) && PyDict_GetItem(nominated, one) == lane->pair;
    Py_DECREF(nominated);
    return ok;
}

/* fan_out(protect, lanes, sequence, timestamp, marker, payload, abs_time, level, tid, picture, tl0, now, ntp)
   -> (sent, rejected lanes or None, [(lane, protected bytes) not written] or None,
       [(copies written, seconds since the call began)] per sendmmsg run, or None)
   level: the audio-level byte or -1; tid, picture, tl0: the VP8 numbers or -1. */
static PyObject *
fastsend_fan_out(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *protect_address, *lanes;
    long long sequence, timestamp, picture, tl0;
    int marker, level, tid;
    const char *payload, *abs_time;
    Py_ssize_t payload_len, abs_len;
    double now;
    unsigned long long ntp;
    if (!PyArg_ParseTuple(args, "OO!LLpy#y#iiLLdK:fan_out", &protect_address, &PyList_Type, &lanes, &sequence, &timestamp,
                          &marker, &payload, &payload_len, &abs_time, &abs_len, &level, &tid, &picture, &tl0, &now, &ntp))
        return NULL;
    protect_fn protect = (protect_fn)PyLong_AsVoidPtr(protect_address);
    if (protect == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no srtp_protect address");
        return NULL;
    }
    if (abs_len != 3) {
        PyErr_SetString(PyExc_ValueError, "abs_time is 3 bytes");
        return NULL;
    }
    PyObject *rejected = NULL, *unsent = NULL, *clear = NULL, *flushes = NULL;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    Lane *batch_lanes[BATCH];
    long sent = 0;
    int used = 0, fd = -1;
    Py_ssize_t count = PyList_GET_SIZE(lanes);
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *item = PyList_GET_ITEM(lanes, index);
        if (Py_TYPE(item) != &LaneType)
            continue;
        Lane *lane = (Lane *)item;
        if (!lane->armed)
            continue;
        long long out_seq = sequence + lane->seg_offset;
        int plain = tid <= lane->max_tid && sequence >= lane->start_seq && sequence >= lane->seg_first
                    && !(lane->has_last_out && (out_seq < lane->last_out_seq - MAX_LATE || out_seq > lane->last_out_seq + MAX_DROPOUT));
        int levelled = level >= 0 && lane->has_level_template;
        Py_ssize_t header = 12 + lane->block_len[levelled];
        if (plain)
            plain = header + payload_len <= BUFFER - MAX_TRAILER;
        if (plain) {
            int connected = lane_connected(lane, &clear);
            if (connected < 0)
                goto error;
            plain = connected;
        }
        if (!plain) {
            lane->armed = 0;
            if (rejected == NULL && (rejected = PyList_New(0)) == NULL)
                goto error;
            if (PyList_Append(rejected, item) < 0)
                goto error;
            continue;
        }
        if (used == BATCH || (used > 0 && lane->fd != fd)) {
            if (flush_lanes(fd, used, batch_lanes, &unsent, &sent, &flushes, &start) < 0)
                goto error;
            used = 0;
        }
        fd = lane->fd;
        long long out_ts = timestamp + lane->ts_offset;
        if (sequence > lane->highest_in)
            lane->highest_in = sequence;
        if (!lane->has_last_out || out_seq > lane->last_out_seq) {
            lane->last_out_seq = out_seq;
            lane->last_out_ts = out_ts;
            lane->has_last_out = 1;
        }
        unsigned char *buffer = buffers[used];
        unsigned long long ts32 = (unsigned long long)out_ts & 0xFFFFFFFFULL;
        unsigned int seq16 = (unsigned int)((unsigned long long)out_seq & 0xFFFF);
        buffer[0] = lane->first[levelled];
        buffer[1] = (unsigned char)((marker ? 0x80 : 0) | (lane->payload_type & 0x7F));
        buffer[2] = (unsigned char)(seq16 >> 8);
        buffer[3] = (unsigned char)seq16;
        buffer[4] = (unsigned char)(ts32 >> 24);
        buffer[5] = (unsigned char)(ts32 >> 16);
        buffer[6] = (unsigned char)(ts32 >> 8);
        buffer[7] = (unsigned char)ts32;
        buffer[8] = (unsigned char)(lane->ssrc >> 24);
        buffer[9] = (unsigned char)(lane->ssrc >> 16);
        buffer[10] = (unsigned char)(lane->ssrc >> 8);
        buffer[11] = (unsigned char)lane->ssrc;
        memcpy(buffer + 12, lane->block[levelled], (size_t)lane->block_len[levelled]);
        if (lane->abs_at[levelled] >= 0)
            memcpy(buffer + 12 + lane->abs_at[levelled], abs_time, 3);
        if (levelled)
            buffer[12 + lane->level_at[1]] = (unsigned char)level;
        memcpy(buffer + header, payload, (size_t)payload_len);
        int length = (int)(header + payload_len);
        int plain_length = length;
        int status = protect(lane->session, buffer, &length);
        if (status != 0 || length < 0 || length > BUFFER) {
            /* counted as sent by the mapping above, as a datagram lost on the way would be */
            continue;
        }
        vectors[used].iov_base = buffer;
        vectors[used].iov_len = (size_t)length;
        memset(&messages[used].msg_hdr, 0, sizeof(struct msghdr));
        messages[used].msg_hdr.msg_name = lane->sockaddr;
        messages[used].msg_hdr.msg_namelen = (socklen_t)lane->sockaddr_len;
        messages[used].msg_hdr.msg_iov = &vectors[used];
        messages[used].msg_hdr.msg_iovlen = 1;
        batch_lanes[used] = lane;
        used++;
        lane->packets++;
        lane->octets += payload_len;
        lane->plain_bytes += plain_length;
        lane->protected_bytes += length;
        lane->last_ntp = ntp;
        lane->last_rtp_ts = (long long)ts32;
        lane->frame_open = !marker;
        lane->last_sent_at = now;
        if (picture >= 0 && (!lane->has_picture || picture > lane->last_picture)) {
            lane->last_picture = picture;
            lane->has_picture = 1;
        }
        if (tl0 >= 0 && (!lane->has_tl0 || tl0 > lane->last_tl0)) {
            lane->last_tl0 = tl0;
            lane->has_tl0 = 1;
        }
    }
    if (used > 0 && flush_lanes(fd, used, batch_lanes, &unsent, &sent, &flushes, &start) < 0)
        goto error;
    PyObject *result = Py_BuildValue("(lOOO)", sent, rejected ? rejected : Py_None, unsent ? unsent : Py_None,
                                     flushes ? flushes : Py_None);
    Py_XDECREF(rejected);
    Py_XDECREF(unsent);
    Py_XDECREF(flushes);
    return result;
error:
    Py_XDECREF(rejected);
    Py_XDECREF(unsent);
    Py_XDECREF(flushes);
    return NULL;
}

static PyMethodDef methods[] = {
    {"send", fastsend_send, METH_VARARGS, "Protect copies with SRTP and write them with sendmmsg (see the module's source)."},
    {"unprotect", fastsend_unprotect, METH_VARARGS, "Unprotect one SRTP packet: its plain bytes, or libsrtp's error."},
    {"fan_out", fastsend_fan_out, METH_VARARGS, "Forward one packet to every armed lane (see Lane)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sfu._fastsend", "SRTP protect and sendmmsg for the forwarding loop.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastsend(void)
{
    if (PyType_Ready(&LaneType) < 0)
        return NULL;
    str_state = PyUnicode_InternFromString("_state");
    str_closing = PyUnicode_InternFromString("_closing");
    str_nominated = PyUnicode_InternFromString("_nominated");
    str_is_closing = PyUnicode_InternFromString("is_closing");
    str_queued = PyUnicode_InternFromString("get_write_buffer_size");
    one = PyLong_FromLong(1);
    if (str_state == NULL || str_closing == NULL || str_nominated == NULL || str_is_closing == NULL || str_queued == NULL || one == NULL)
        return NULL;
    PyObject *made = PyModule_Create(&module);
    if (made == NULL)
        return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddIntConstant(made, "BUFFER", BUFFER) < 0 || PyModule_AddIntConstant(made, "MAX_TRAILER", MAX_TRAILER) < 0
        || PyModule_AddIntConstant(made, "MAX_LATE", MAX_LATE) < 0 || PyModule_AddIntConstant(made, "MAX_DROPOUT", MAX_DROPOUT) < 0
        || PyModule_AddObject(made, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(made);
        return NULL;
    }
    return made;
}
