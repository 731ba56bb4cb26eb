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

/* Write messages [0, used) on fd; what is left unwritten becomes protected bytes in results. */
static int
flush(int fd, int used, PyObject **results, Py_ssize_t count)
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

static PyMethodDef methods[] = {
    {"send", fastsend_send, METH_VARARGS, "Protect copies with SRTP and write them with sendmmsg (see the module's source)."},
    {"unprotect", fastsend_unprotect, METH_VARARGS, "Unprotect one SRTP packet: its plain bytes, or libsrtp's error."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sfu._fastsend", "SRTP protect and sendmmsg for the forwarding loop.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastsend(void)
{
    PyObject *made = PyModule_Create(&module);
    if (made != NULL && (PyModule_AddIntConstant(made, "BUFFER", BUFFER) < 0 || PyModule_AddIntConstant(made, "MAX_TRAILER", MAX_TRAILER) < 0)) {
        Py_DECREF(made);
        return NULL;
    }
    return made;
}
