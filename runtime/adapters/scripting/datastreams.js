// addToDataStream / updateDataStream (reference/nuviot-spec.md §4.4, Scripting/DataStreams.md), kept apart
// from glue.js: each call is collected here and Python takes them after the hook (__gStreamTake); the
// dispatcher checks and queues the rows once the workflow has run. Named "__g..." so that error stacks skip
// these frames. (QuickJS cannot call into Python while a time limit is set, hence the collection.)

var __gStreamCalls = [];

function __gStreamCall(op, streamKey, values, filter) {
  if (typeof streamKey !== "string" || streamKey.length === 0) {
    throw new TypeError(op + "DataStream: the first argument must be the data stream's key");
  }
  if (values === null || typeof values !== "object" || Array.isArray(values)) {
    throw new TypeError(op + "DataStream: the values must be an object of field: value");
  }
  var f = (filter === undefined || filter === null) ? null : filter;
  if (f !== null && (typeof f !== "object" || Array.isArray(f))) {
    throw new TypeError("updateDataStream: the filter must be an object of field: value");
  }
  if (__gStreamCalls.length >= 1000) {
    throw new RangeError(op + "DataStream: more than 1000 data-stream writes in one script call");
  }
  __gStreamCalls.push([op === "update" ? "update" : "add", streamKey, JSON.parse(JSON.stringify(values)),
    f === null ? null : JSON.parse(JSON.stringify(f))]);
  return true;
}

function __gStreamTake() {
  if (__gStreamCalls.length === 0) {
    return "";
  }
  var out = JSON.stringify(__gStreamCalls);
  __gStreamCalls = [];
  return out;
}

function __gAddToDataStream(streamKey, values) {
  return __gStreamCall("addTo", streamKey, values, null);
}

function __gUpdateDataStream(streamKey, values, filter) {
  return __gStreamCall("update", streamKey, values, filter);
}

Object.defineProperty(globalThis, "addToDataStream", {value: __gAddToDataStream, writable: false, enumerable: false, configurable: false});
Object.defineProperty(globalThis, "updateDataStream", {value: __gUpdateDataStream, writable: false, enumerable: false, configurable: false});
