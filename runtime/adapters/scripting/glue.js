// The NuvIoT scripting model (reference/nuviot-spec.md §4.4) for one workflow's QuickJS context.
//
// Loaded once per context, before the hooks. Python talks to it through the __g* functions only, with
// JSON strings both ways. Every glue function is named "__g..." so that error stacks can skip glue frames
// and report the line inside the user's script. No anonymous functions here for the same reason.
//
// Everything lives inside one function so that scripts cannot reach or replace the glue's state; the
// entry points Python calls are non-writable globals. __gLockdown (after setup, before the scripts are
// compiled) freezes every built-in (docs/scripting.md §2 "Isolation").
//
// Session state S: {a: attributes, p: device properties, b: property bag, m: state machines, l: location,
//   v: session values, c: enqueued commands, e: raised events, o: console logs, w: warnings, d: dirty set}.

(function __gModule() {
var __gMeta = null;            // {workflow, commands: {key: [paramKeys]}, machines: [keys]}
var __gHooks = Object.create(null);   // hook name -> factory (compiled once); each call of a factory runs the
                                      // script's top level again and returns a fresh function
var __gLive = Object.create(null);    // hook name -> this session's function (made at its first call)
var __gSealed = false;
var __gStack = [];             // hooks running now; left as is when a call is interrupted (timeout)
var __gBaseline = null;        // global names after setup; others are removed at each session start
var __gS = null;
var __gFields = null;
var __gDevice = null;
var __gInputs = null;
var __gCommand = null;
var __gHas = Object.prototype.hasOwnProperty;

function __gEmptyState() {
  return {a: {}, p: {}, b: {}, m: {}, l: null, v: {}, c: [], e: [], o: [], w: [], d: {}};
}

function __gDefine(name, factory) {
  if (__gSealed) {
    throw new TypeError("scripts cannot define hooks");
  }
  __gHooks[name] = factory;
}

function __gProbe(name) {  // a script that defines no function of the expected name is no hook
  if (typeof __gHooks[name]() === "function") {
    return true;
  }
  delete __gHooks[name];
  return false;
}

function __gHook(name) {
  var fn = __gLive[name];
  if (fn === undefined) {
    fn = __gHooks[name]();
    __gLive[name] = fn;
  }
  return fn;
}

function __gErr(e, hook) {
  if (e !== null && typeof e === "object" && e.__gErr === true) {
    return e;
  }
  var message;
  var stack = "";
  if (e instanceof Error) {
    message = e.name + ": " + e.message;
    stack = String(e.stack || "");
  } else {
    message = "uncaught " + String(e);
  }
  return {__gErr: true, hook: hook, message: message, stack: stack};
}

function __gInvoke(name, args) {
  var fn = __gHook(name);
  __gStack.push(name);
  var result;
  try {
    result = fn.apply(null, args);
  } catch (e) {
    __gStack.pop();
    throw __gErr(e, name);
  }
  __gStack.pop();
  return result;
}

function __gPlain(v) {
  return v === undefined ? null : v;
}

function __gSetup(metaJson) {
  if (__gMeta !== null) {
    throw new TypeError("already set up");
  }
  __gMeta = JSON.parse(metaJson);
  var commands = {};
  var keys = Object.keys(__gMeta.commands);
  for (var i = 0; i < keys.length; i++) {
    commands[keys[i]] = Object.freeze(__gMakeCommand(keys[i], __gMeta.commands[keys[i]]));
  }
  var machines = {};
  for (var j = 0; j < __gMeta.machines.length; j++) {
    machines[__gMeta.machines[j]] = Object.freeze(__gMakeMachine(__gMeta.machines[j]));
  }
  __gConst("OutputCommands", Object.freeze(commands));
  __gConst("StateMachines", Object.freeze(machines));
  __gS = __gEmptyState();
  return "";
}

function __gSeal() {
  __gSealed = true;
  return "";
}

function __gConst(name, value) {
  Object.defineProperty(globalThis, name, {value: value, writable: false, enumerable: false, configurable: false});
}

function __gMakeCommand(key, params) {
  var hook = "outputcommand " + key + " / onExecute";
  return {
    send: function __gSend() {
      var args = Array.prototype.slice.call(arguments);
      if (__gHooks[hook] !== undefined) {
        return __gInvoke(hook, args);
      }
      var fields = {};
      for (var i = 0; i < args.length && i < params.length; i++) {
        fields[params[i]] = __gPlain(args[i]);
      }
      if (args.length > params.length) {
        __gS.w.push("OutputCommands." + key + ".send: " + (args.length - params.length) + " argument(s) beyond the command's parameters ignored");
      }
      __gS.c.push([key, fields]);
      return undefined;
    },
    create: function __gCreate() {
      var command = {};
      Object.defineProperty(command, "enqueue", {
        value: function __gEnqueue() {
          __gS.c.push([key, JSON.parse(JSON.stringify(command))]);
        },
        enumerable: false
      });
      return command;
    }
  };
}

function __gMakeMachine(key) {
  var machine = {
    handle: function __gHandle(event, value) {
      __gS.e.push([key, String(event), __gPlain(value)]);
    }
  };
  Object.defineProperty(machine, "currentState", {get: function __gCurrent() { return __gPlain(__gS.m[key]); }});
  return machine;
}

function __gBag(part, label) {
  return new Proxy({}, {
    get: function __gGet(t, k) {
      if (typeof k !== "string") {
        return undefined;
      }
      return __gHas.call(__gS[part], k) ? __gS[part][k] : undefined;
    },
    set: function __gSet(t, k, v) {
      if (label === null) {
        throw new TypeError(String(k) + " is read-only");
      }
      if (v === undefined || v === null) {
        __gS[part][k] = null;
      } else {
        __gS[part][k] = v;
      }
      __gS.d[label] = true;
      return true;
    },
    deleteProperty: function __gDelete(t, k) {
      if (label !== null) {
        __gS[part][k] = null;
        __gS.d[label] = true;
      }
      return true;
    },
    has: function __gHasKey(t, k) {
      return __gHas.call(__gS[part], k);
    },
    ownKeys: function __gKeys() {
      return Object.keys(__gS[part]);
    },
    getOwnPropertyDescriptor: function __gDesc(t, k) {
      if (!__gHas.call(__gS[part], k)) {
        return undefined;
      }
      return {value: __gS[part][k], writable: label !== null, enumerable: true, configurable: true};
    }
  });
}

__gConst("Attributes", __gBag("a", "attributes"));
__gConst("DeviceProperties", __gBag("p", "properties"));
Object.defineProperty(globalThis, "WorkflowInputs", {get: function __gInputsGet() { return __gInputs; }, configurable: false});
Object.defineProperty(globalThis, "InputCommand", {get: function __gCommandGet() { return __gCommand; }, configurable: false});
Object.defineProperty(globalThis, "IoTDevice", {get: function __gDeviceGet() { return __gDevice; }, configurable: false});
Object.defineProperty(globalThis, "Fields", {get: function __gFieldsGet() { return __gFields; }, configurable: false});

function __gFn(name, fn) {
  __gConst(name, fn);
}

__gFn("setDeviceProperty", function __gSetProp(k, v) { __gS.p[String(k)] = __gPlain(v); __gS.d.properties = true; });
__gFn("addToPropertyBag", function __gBagAdd(k, v) { __gS.b[String(k)] = __gPlain(v); __gS.d.property_bag = true; });
__gFn("getFromPropertyBag", function __gBagGet(k, d) {
  return __gHas.call(__gS.b, k) && __gS.b[k] !== null ? __gS.b[k] : __gPlain(d);
});
__gFn("hasPropertyBagValue", function __gBagHas(k) { return __gHas.call(__gS.b, k) && __gS.b[k] !== null; });
__gFn("clearPropertyBagValue", function __gBagClear(k) {
  if (__gHas.call(__gS.b, k)) {
    delete __gS.b[k];
    __gS.d.property_bag = true;
  }
});
__gFn("setSessionValue", function __gSessSet(k, v) { __gS.v[String(k)] = __gPlain(v); });
__gFn("getSessionValue", function __gSessGet(k, d) { return __gHas.call(__gS.v, k) ? __gS.v[k] : __gPlain(d); });
__gFn("hasSessionValue", function __gSessHas(k) { return __gHas.call(__gS.v, k); });
__gFn("clearSessionValue", function __gSessClear(k) { delete __gS.v[k]; });

function __gSetLocation(lat, lon) {
  var la = Number(lat);
  var lo = Number(lon);
  if (!isFinite(la) || !isFinite(lo) || Math.abs(la) > 90 || Math.abs(lo) > 180) {
    throw new RangeError("setDeviceGeoLocation: invalid latitude/longitude " + lat + ", " + lon);
  }
  __gS.l = [la, lo];
  __gS.d.location = true;
}
__gFn("setDeviceGeoLocation", __gSetLocation);
__gFn("SetDeviceLocation", __gSetLocation);
__gFn("setDeviceLocation", __gSetLocation);

function __gLog(m) {
  __gS.o.push(typeof m === "string" ? m : (m !== null && typeof m === "object" ? JSON.stringify(m) : String(m)));
}
__gFn("logConsole", __gLog);
__gFn("logToDevice", function __gLogDevice(m, title) { __gLog(title === undefined ? m : String(title) + ": " + String(m)); });
__gFn("clearDeviceLog", function __gClearLog() {});
__gConst("console", Object.freeze({log: __gLog, info: __gLog, warn: __gLog, error: __gLog, debug: __gLog}));

function __gUnsupported(name) {
  return function __gNotHere() {
    __gS.w.push(name + "() is not supported by this runtime; the call was ignored");
  };
}
var __gUnsupportedNames = ["enqueuePEM", "enqueuePEMToParent", "enqueuePEMForDeviceConfig", "enqueuePEMToDeviceGroup",
  "sendInstanceNotification", "sendDeviceConfigurationNotification", "sendDeviceNotification", "sendEmail", "sendSMS"];
// addToDataStream / updateDataStream: datastreams.js
for (var __gi = 0; __gi < __gUnsupportedNames.length; __gi++) {
  __gFn(__gUnsupportedNames[__gi], __gUnsupported(__gUnsupportedNames[__gi]));
}

// ---- the Python-facing entry points

// What one message leaves behind is gone before the next one starts: globals a script created, the
// functions (and the script-level variables they close over) of the hooks that ran, the session state.
function __gReset() {
  if (__gBaseline !== null) {
    var names = Object.getOwnPropertyNames(globalThis);
    for (var i = 0; i < names.length; i++) {
      if (__gBaseline[names[i]] !== true) {
        try { delete globalThis[names[i]]; } catch (e) { /* made non-configurable by a script: leave it */ }
      }
    }
  }
  __gStack.length = 0;
  __gLive = Object.create(null);
  __gS = __gEmptyState();
}

function __gBegin(ctxJson) {
  __gReset();
  var ctx = JSON.parse(ctxJson);
  __gLoadState(ctx.s);
  var loc = Object.freeze(__gS.l === null ? {Latitude: null, Longitude: null, latitude: null, longitude: null}
    : {Latitude: __gS.l[0], Longitude: __gS.l[1], latitude: __gS.l[0], longitude: __gS.l[1]});
  // PascalCase (the .NET names) and camelCase (what NuvIoT's own scripts use: the starter app's
  // "Example - Motion" onSet reads IoTDevice.name, LagoVista/StarterKit OrgInitializer)
  __gDevice = Object.freeze({
    DeviceId: ctx.device.id, deviceId: ctx.device.id, id: ctx.device.id,
    Name: ctx.device.name, name: ctx.device.name,
    DeviceConfiguration: ctx.device.config, deviceConfiguration: ctx.device.config,
    DeviceType: ctx.device.type, deviceType: ctx.device.type,
    MessageId: ctx.device.message, messageId: ctx.device.message,
    Location: loc, location: loc
  });
  __gInputs = Object.freeze(ctx.inputs);
  __gCommand = ctx.command === null ? undefined : Object.freeze(ctx.command);
  __gFields = null;
  return "";
}

function __gLoadState(s) {
  __gS.a = s.attributes;
  __gS.p = s.properties;
  __gS.b = s.property_bag;
  __gS.m = s.state_machines;
  __gS.l = s.location;
  __gS.d = {};
}

function __gTake(value) {
  var out = {v: __gPlain(value), c: __gS.c, e: __gS.e, o: __gS.o, w: __gS.w};
  var dirty = Object.keys(__gS.d);
  if (dirty.length > 0) {
    out.s = {attributes: __gS.a, properties: __gS.p, property_bag: __gS.b, location: __gS.l, dirty: dirty};
  }
  __gS.c = [];
  __gS.e = [];
  __gS.o = [];
  __gS.w = [];
  __gS.d = {};
  return out;
}

function __gCall(name, argsJson, stateJson) {
  if (stateJson !== "") {
    __gLoadState(JSON.parse(stateJson));
  }
  try {
    var value = __gInvoke(name, JSON.parse(argsJson));
    return JSON.stringify(__gTake(value));
  } catch (e) {
    var err = __gErr(e, name);
    __gS.c = [];
    __gS.e = [];
    return JSON.stringify({x: {hook: err.hook, message: err.message, stack: err.stack}});
  }
}

function __gOutput(name, fieldsJson, deviceId) {
  __gReset();
  __gFields = Object.freeze(JSON.parse(fieldsJson));
  __gDevice = Object.freeze({DeviceId: deviceId, deviceId: deviceId, id: deviceId});
  try {
    var value = __gInvoke(name, []);
    var isText = typeof value === "string";
    return JSON.stringify({v: __gPlain(value), t: isText, o: __gS.o});
  } catch (e) {
    var err = __gErr(e, name);
    return JSON.stringify({x: {hook: err.hook, message: err.message, stack: err.stack}});
  } finally {
    __gFields = null;
  }
}

function __gRunning() {
  var stack = __gStack.slice();
  __gStack.length = 0;
  return JSON.stringify(stack);
}

// ---- lockdown: built-ins are frozen, so no script can change what another message sees

// Assigning to an own property whose name a frozen prototype also has fails (the "override mistake"):
// `obj.toString = f`, `this.name = "MyError"`. For these names the prototype gets an accessor whose setter
// makes the property on the object itself (as SES does), so such scripts keep working.
var __gTamed = ["constructor", "toString", "toLocaleString", "valueOf", "name", "message"];

function __gTame(proto) {
  for (var i = 0; i < __gTamed.length; i++) {
    var key = __gTamed[i];
    var d = Object.getOwnPropertyDescriptor(proto, key);
    if (d === undefined || !("value" in d) || !d.writable || !d.configurable) {
      continue;
    }
    __gTameOne(proto, key, d.value, d.enumerable);
  }
}

function __gTameOne(proto, key, value, enumerable) {
  Object.defineProperty(proto, key, {
    get: function __gTamedGet() { return value; },
    set: function __gTamedSet(v) {
      if (this === proto) {
        throw new TypeError("Cannot assign to read only property '" + key + "' of a built-in object");
      }
      Object.defineProperty(this, key, {value: v, writable: true, enumerable: true, configurable: true});
    },
    enumerable: enumerable,
    configurable: false
  });
}

function __gHarden(roots) {
  var seen = new Set();
  var todo = roots.slice();
  while (todo.length > 0) {
    var o = todo.pop();
    if (o === null || o === globalThis || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) {
      continue;
    }
    seen.add(o);
    var keys = Reflect.ownKeys(o);
    for (var i = 0; i < keys.length; i++) {
      var d = Object.getOwnPropertyDescriptor(o, keys[i]);
      if (d === undefined) {
        continue;
      }
      if ("value" in d) {
        todo.push(d.value);
      } else {
        todo.push(d.get, d.set);
      }
    }
    todo.push(Object.getPrototypeOf(o));
    Object.freeze(o);
  }
  return seen.size;
}

function __gLockdown() {
  var names = Object.getOwnPropertyNames(globalThis);
  var roots = [];
  var builtins = [];
  for (var i = 0; i < names.length; i++) {
    var d = Object.getOwnPropertyDescriptor(globalThis, names[i]);
    if (d.configurable) {  // the model's globals are non-configurable already; built-ins are not
      builtins.push(names[i]);
      if ("value" in d && d.value !== globalThis) {  // globalThis stays extensible (sloppy-mode globals)
        roots.push(d.value);
      }
    }
  }
  // intrinsics no global names
  roots.push(Object.getPrototypeOf([][Symbol.iterator]()), Object.getPrototypeOf(""[Symbol.iterator]()),
    Object.getPrototypeOf(new Map().entries()), Object.getPrototypeOf(new Set().values()),
    Object.getPrototypeOf(/a/[Symbol.matchAll]("")), Object.getPrototypeOf(function* __gGen() {}),
    Object.getPrototypeOf(function* __gGen2() {}()), Object.getPrototypeOf(async function __gAsync() {}),
    Object.getPrototypeOf(async function* __gAsyncGen() {}), Object.getPrototypeOf(Int8Array));
  var protos = [Object.prototype, Function.prototype, Array.prototype, String.prototype, Number.prototype,
    Boolean.prototype, Date.prototype, RegExp.prototype, Promise.prototype, Map.prototype, Set.prototype,
    Error.prototype, EvalError.prototype, RangeError.prototype, ReferenceError.prototype, SyntaxError.prototype,
    TypeError.prototype, URIError.prototype];
  if (typeof AggregateError === "function") {
    protos.push(AggregateError.prototype);
  }
  for (var p = 0; p < protos.length; p++) {
    __gTame(protos[p]);
  }
  var count = __gHarden(roots);
  for (var j = 0; j < builtins.length; j++) {
    var desc = Object.getOwnPropertyDescriptor(globalThis, builtins[j]);
    if ("value" in desc) {
      Object.defineProperty(globalThis, builtins[j], {writable: false, configurable: false});
    } else {
      Object.defineProperty(globalThis, builtins[j], {configurable: false});
    }
  }
  __gBaseline = Object.create(null);
  names = Object.getOwnPropertyNames(globalThis);
  for (var k = 0; k < names.length; k++) {
    __gBaseline[names[k]] = true;
  }
  return String(count);
}

var __gExports = {__gDefine: __gDefine, __gProbe: __gProbe, __gSetup: __gSetup, __gLockdown: __gLockdown,
  __gSeal: __gSeal, __gBegin: __gBegin, __gCall: __gCall, __gOutput: __gOutput, __gRunning: __gRunning};
var __gExportNames = Object.keys(__gExports);
for (var __ge = 0; __ge < __gExportNames.length; __ge++) {
  __gConst(__gExportNames[__ge], __gExports[__gExportNames[__ge]]);
}
})();
