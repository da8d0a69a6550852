/*
 * The worker's fast path for one spans-topic record: reads the protobuf wire
 * format of an envelope laid out as the ingest service writes it (see
 * services/worker/_decode.py) and returns the span's fields and its
 * attributes as a dict, without building protobuf message objects.
 *
 * It handles the common case only and returns None for anything else, so
 * that the protobuf path decides, with the same rows and the same errors:
 * another envelope layout, a field seen twice, events or links (their
 * strings would need checking), an unknown field, an attribute holding an
 * array, a key-value list or bytes, a NUL character, a non-finite double,
 * invalid UTF-8, truncated input. tests/worker/test_span_wire.py checks that
 * both paths give the same rows for generated and mutated records.
 *
 * Reference: https://protobuf.dev/programming-guides/encoding/ and the OTLP
 * trace.proto / common.proto field numbers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

enum wire_type { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_FIXED32 = 5 };

typedef struct {
    const uint8_t *at;
    const uint8_t *end;
} reader;

/* 1 and the value, or 0 when the input ends or the varint is too long. */
static int read_varint(reader *r, uint64_t *value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->at >= r->end) return 0;
        uint8_t byte = *r->at++;
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *value = result;
            return 1;
        }
    }
    return 0;
}

static int read_fixed64(reader *r, uint64_t *value) {
    if (r->end - r->at < 8) return 0;
    uint64_t result = 0;
    for (int i = 7; i >= 0; i--) result = (result << 8) | r->at[i];
    r->at += 8;
    *value = result;
    return 1;
}

/* A length-delimited field's bytes, as a sub-reader. */
static int read_len(reader *r, reader *field) {
    uint64_t size;
    if (!read_varint(r, &size)) return 0;
    if (size > (uint64_t)(r->end - r->at)) return 0;
    field->at = r->at;
    field->end = r->at + size;
    r->at += size;
    return 1;
}

static int read_tag(reader *r, uint32_t *field, uint32_t *wire_type) {
    uint64_t tag;
    if (!read_varint(r, &tag) || tag > UINT32_MAX) return 0;
    *field = (uint32_t)(tag >> 3);
    *wire_type = (uint32_t)(tag & 7);
    return *field != 0;
}

/* A str of valid, NUL-free UTF-8, or NULL (no exception set) otherwise. */
static PyObject *clean_text(reader field) {
    Py_ssize_t size = field.end - field.at;
    if (memchr(field.at, 0, size) != NULL) return NULL;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)field.at, size, "strict");
    if (text == NULL) PyErr_Clear();
    return text;
}

static PyObject *as_bytes(reader field) {
    return PyBytes_FromStringAndSize((const char *)field.at, field.end - field.at);
}

static PyObject *array_value(reader r);

/* An AnyValue of the kinds the fast path keeps (string, bool, int, finite
 * double, unset: None, and at the top level an array of those: a list);
 * NULL for any other, with no exception set. */
static PyObject *any_value(reader r, int top_level) {
    PyObject *value = NULL;
    uint32_t field, wire_type;
    while (r.at < r.end) {
        if (value != NULL || !read_tag(&r, &field, &wire_type)) goto other;
        if (field == 1 && wire_type == WT_LEN) {
            reader text;
            if (!read_len(&r, &text)) goto other;
            value = clean_text(text);
        } else if (field == 2 && wire_type == WT_VARINT) {
            uint64_t flag;
            if (!read_varint(&r, &flag)) goto other;
            value = PyBool_FromLong(flag != 0);
        } else if (field == 3 && wire_type == WT_VARINT) {
            uint64_t number;
            if (!read_varint(&r, &number)) goto other;
            value = PyLong_FromLongLong((long long)(int64_t)number);
        } else if (field == 4 && wire_type == WT_FIXED64) {
            uint64_t bits;
            double number;
            if (!read_fixed64(&r, &bits)) goto other;
            memcpy(&number, &bits, sizeof number);
            if (!isfinite(number)) goto other;
            value = PyFloat_FromDouble(number);
        } else if (field == 5 && wire_type == WT_LEN && top_level) {
            reader values;
            if (!read_len(&r, &values)) goto other;
            value = array_value(values);
        } else {
            goto other;
        }
        if (value == NULL) goto other;
    }
    if (value == NULL) Py_RETURN_NONE;
    return value;
other:
    Py_XDECREF(value);
    return NULL;
}

/* An ArrayValue (repeated AnyValue, field 1) of plain values, as a list. */
static PyObject *array_value(reader r) {
    PyObject *values = PyList_New(0);
    uint32_t field, wire_type;
    if (values == NULL) {
        PyErr_Clear();
        return NULL;
    }
    while (r.at < r.end) {
        reader element;
        PyObject *value;
        if (!read_tag(&r, &field, &wire_type) || field != 1 || wire_type != WT_LEN ||
            !read_len(&r, &element))
            goto other;
        if ((value = any_value(element, 0)) == NULL) goto other;
        int failed = PyList_Append(values, value);
        Py_DECREF(value);
        if (failed) {
            PyErr_Clear();
            goto other;
        }
    }
    return values;
other:
    Py_DECREF(values);
    return NULL;
}

/* Adds one KeyValue to `attributes`: 1 done, 0 not handled, -1 error. */
static int add_key_value(reader r, PyObject *attributes) {
    PyObject *key = NULL;
    PyObject *value = NULL;
    int seen_key = 0, seen_value = 0;
    uint32_t field, wire_type;
    while (r.at < r.end) {
        reader part;
        if (!read_tag(&r, &field, &wire_type) || wire_type != WT_LEN) goto other;
        if (!read_len(&r, &part)) goto other;
        if (field == 1 && !seen_key) {
            seen_key = 1;
            if ((key = clean_text(part)) == NULL) goto other;
        } else if (field == 2 && !seen_value) {
            seen_value = 1;
            if ((value = any_value(part, 1)) == NULL) goto other;
        } else {
            goto other;
        }
    }
    if (key == NULL && (key = PyUnicode_FromStringAndSize("", 0)) == NULL) goto error;
    if (value == NULL) {
        value = Py_None;
        Py_INCREF(value);
    }
    int failed = PyDict_SetItem(attributes, key, value);
    Py_DECREF(key);
    Py_DECREF(value);
    return failed ? -1 : 1;
other:
    Py_XDECREF(key);
    Py_XDECREF(value);
    return 0;
error:
    Py_XDECREF(value);
    return -1;
}

/* Status: code and message; 1 done, 0 not handled. */
static int read_status(reader r, int32_t *code, reader *message) {
    int seen_code = 0, seen_message = 0;
    uint32_t field, wire_type;
    while (r.at < r.end) {
        if (!read_tag(&r, &field, &wire_type)) return 0;
        if (field == 2 && wire_type == WT_LEN && !seen_message) {
            seen_message = 1;
            if (!read_len(&r, message)) return 0;
        } else if (field == 3 && wire_type == WT_VARINT && !seen_code) {
            uint64_t number;
            seen_code = 1;
            if (!read_varint(&r, &number)) return 0;
            *code = (int32_t)number;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Skips a field of the given wire type; 1 done, 0 malformed. */
static int skip_field(reader *r, uint32_t wire_type) {
    uint64_t ignored;
    reader field;
    switch (wire_type) {
    case WT_VARINT: return read_varint(r, &ignored);
    case WT_FIXED64: return read_fixed64(r, &ignored);
    case WT_LEN: return read_len(r, &field);
    case WT_FIXED32:
        if (r->end - r->at < 4) return 0;
        r->at += 4;
        return 1;
    default: return 0;
    }
}

/* The span's fields as a tuple (see split_span's docstring), or None. */
static PyObject *read_span(reader r, PyObject *resource, PyObject *scope) {
    reader trace_id = {0}, span_id = {0}, parent = {0}, name = {0};
    reader status_message = {0};
    uint64_t kind = 0, start_ns = 0, end_ns = 0;
    int32_t status_code = 0;
    uint32_t seen = 0;
    uint32_t field, wire_type;
    PyObject *attributes = PyDict_New();
    if (attributes == NULL) return NULL;

    while (r.at < r.end) {
        reader part;
        if (!read_tag(&r, &field, &wire_type)) goto other;
        /* Singular fields appear once; attributes (9) repeat. */
        if (field != 9) {
            if (field < 32 && (seen & (1u << field))) goto other;
            if (field < 32) seen |= 1u << field;
        }
        switch (field) {
        case 1: case 2: case 3: case 4: case 5: case 9: case 15:
            if (wire_type != WT_LEN || !read_len(&r, &part)) goto other;
            break;
        case 6: case 10: case 12: case 14:
            if (wire_type != WT_VARINT) goto other;
            break;
        case 7: case 8:
            if (wire_type != WT_FIXED64) goto other;
            break;
        case 16:
            if (wire_type != WT_FIXED32 || !skip_field(&r, wire_type)) goto other;
            continue;
        default:
            goto other;  /* events, links and unknown fields */
        }
        switch (field) {
        case 1: trace_id = part; break;
        case 2: span_id = part; break;
        case 3: {  /* trace_state: not stored, but it must be valid UTF-8 */
            PyObject *text = clean_text(part);
            if (text == NULL) goto other;
            Py_DECREF(text);
            break;
        }
        case 4: parent = part; break;
        case 5: name = part; break;
        case 6:
            if (!read_varint(&r, &kind)) goto other;
            break;
        case 7:
            if (!read_fixed64(&r, &start_ns)) goto other;
            break;
        case 8:
            if (!read_fixed64(&r, &end_ns)) goto other;
            break;
        case 9: {
            int added = add_key_value(part, attributes);
            if (added < 0) goto error;
            if (added == 0) goto other;
            break;
        }
        case 10: case 12: case 14:
            if (!skip_field(&r, wire_type)) goto other;
            break;
        case 15:
            if (!read_status(part, &status_code, &status_message)) goto other;
            break;
        }
    }

    PyObject *name_text = clean_text(name);
    if (name_text == NULL) goto other;
    PyObject *message_text = clean_text(status_message);
    if (message_text == NULL) {
        Py_DECREF(name_text);
        goto other;
    }
    PyObject *parent_id;
    if (parent.end == parent.at) {
        parent_id = Py_None;
        Py_INCREF(parent_id);
    } else {
        parent_id = as_bytes(parent);
    }
    PyObject *result = Py_BuildValue(
        "(OONNNNiKKiNN)", resource, scope, as_bytes(trace_id), as_bytes(span_id),
        parent_id, name_text, (int)(int32_t)kind, (unsigned long long)start_ns,
        (unsigned long long)end_ns, (int)status_code, message_text, attributes);
    return result;
other:
    Py_DECREF(attributes);
    Py_RETURN_NONE;
error:
    Py_DECREF(attributes);
    return NULL;
}

PyDoc_STRVAR(split_span_doc,
"split_span(value: bytes) -> tuple | None\n"
"\n"
"(resource bytes, scope bytes, trace id, span id, parent span id or None,\n"
"name, kind, start ns, end ns, status code, status message, attributes)\n"
"of a record in the ingest service's layout, or None for anything the\n"
"protobuf path must decide.");

static PyObject *split_span(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    reader r = {view.buf, (const uint8_t *)view.buf + view.len};
    reader resource, scope_spans, scope = {0}, span;
    uint32_t field, wire_type;
    PyObject *result = NULL;

    /* ResourceSpans: resource (1), then one scope_spans (2) to the end. */
    if (!read_tag(&r, &field, &wire_type) || field != 1 || wire_type != WT_LEN ||
        !read_len(&r, &resource))
        goto other;
    if (!read_tag(&r, &field, &wire_type) || field != 2 || wire_type != WT_LEN ||
        !read_len(&r, &scope_spans) || r.at != r.end)
        goto other;

    /* ScopeSpans: scope (1) if any, then one span (2) to the end. */
    if (!read_tag(&scope_spans, &field, &wire_type) || wire_type != WT_LEN) goto other;
    if (field == 1) {
        if (!read_len(&scope_spans, &scope)) goto other;
        if (!read_tag(&scope_spans, &field, &wire_type) || wire_type != WT_LEN)
            goto other;
    }
    if (field != 2 || !read_len(&scope_spans, &span) || scope_spans.at != scope_spans.end)
        goto other;

    PyObject *resource_bytes = as_bytes(resource);
    PyObject *scope_bytes = as_bytes(scope);
    if (resource_bytes == NULL || scope_bytes == NULL) {
        Py_XDECREF(resource_bytes);
        Py_XDECREF(scope_bytes);
        goto done;
    }
    result = read_span(span, resource_bytes, scope_bytes);
    Py_DECREF(resource_bytes);
    Py_DECREF(scope_bytes);
    goto done;
other:
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"split_span", split_span, METH_O, split_span_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_span_wire",
    "Fast path of services.worker._decode for common span records.", -1, methods,
};

PyMODINIT_FUNC PyInit__span_wire(void) { return PyModule_Create(&module); }
