// libbpf bindings: load objects with a pin root, map access, tc and XDP attachment, test runs.
// Map operations are synchronous (a syscall of a few microseconds); loading and test runs are not.
#include <algorithm>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <cstdarg>
#include <map>
#include <mutex>
#include <vector>

#include "common.h"

namespace {

std::mutex logMu;
std::vector<std::string> logLines;

// libbpf hands the kernel's verifier log over in one message, often many kilobytes long, whose end
// holds the reason a program was refused: messages are kept whole and split into lines, and an error
// carries the last lines (the refused instruction and the verifier's verdict), not the first.
int printFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  va_list again;
  va_copy(again, args);
  int n = vsnprintf(nullptr, 0, fmt, args);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) vsnprintf(s.data(), s.size() + 1, fmt, again);
  va_end(again);
  const char* tag = level == LIBBPF_WARN ? "warn: " : "info: ";
  std::lock_guard<std::mutex> g(logMu);
  size_t at = 0;
  while (at < s.size()) {
    size_t nl = s.find('\n', at);
    std::string line = s.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? s.size() : nl + 1;
    if (line.empty()) continue;
    // a bounded ring: the newest lines are the ones an error reports
    if (logLines.size() >= 4096) logLines.erase(logLines.begin(), logLines.begin() + 1024);
    logLines.push_back(tag + line);
  }
  return 0;
}

std::string recentLog() {
  std::lock_guard<std::mutex> g(logMu);
  std::string out;
  size_t from = logLines.size() > 24 ? logLines.size() - 24 : 0;
  for (size_t i = from; i < logLines.size(); i++) out += (out.empty() ? "" : "\n") + logLines[i];
  return out;
}

std::mutex objMu;
std::map<uint32_t, bpf_object*> objects;
uint32_t nextId = 1;

[[noreturn]] void fail(int err, const std::string& op, const std::string& detail = "") {
  throw SysError{err < 0 ? -err : err, op, detail};
}

int fdArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": fd (number) expected");
  return info[i].As<Napi::Number>().Int32Value();
}
Napi::Buffer<uint8_t> bufArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": Buffer expected");
  return info[i].As<Napi::Buffer<uint8_t>>();
}
uint32_t u32Arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": number expected");
  return info[i].As<Napi::Number>().Uint32Value();
}
void throwSys(Napi::Env env, int err, const std::string& op) {
  throw makeSysError(env, SysError{err < 0 ? -err : err, op, ""});
}

struct ProgDesc { std::string name, section; int fd; uint32_t type; };
struct MapDesc { std::string name; int fd; uint32_t type, keySize, valueSize, maxEntries; };
struct Loaded { uint32_t id; std::vector<ProgDesc> progs; std::vector<MapDesc> maps; };

// An optional { mapName: number } argument, as (name, value) pairs.
static std::vector<std::pair<std::string, uint32_t>> perMap(const Napi::CallbackInfo& info, size_t i) {
  std::vector<std::pair<std::string, uint32_t>> out;
  if (info.Length() <= i || !info[i].IsObject()) return out;
  Napi::Object o = info[i].As<Napi::Object>();
  Napi::Array names = o.GetPropertyNames();
  for (uint32_t k = 0; k < names.Length(); k++) {
    std::string name = names.Get(k).As<Napi::String>().Utf8Value();
    out.emplace_back(name, o.Get(name).As<Napi::Number>().Uint32Value());
  }
  return out;
}

Napi::Value ObjectOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw Napi::TypeError::New(env, "bpfObjectOpen(path, pinRoot, mapFlags?, mapSizes?)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string pinRoot = info[1].As<Napi::String>().Utf8Value();
  // mapFlags: { mapName: flags } set before the load (BPF_F_NO_PREALLOC decided at run time)
  auto mapFlags = perMap(info, 2);
  // mapSizes: { mapName: maxEntries } set before the load (peer maps sized from the network config)
  auto mapSizes = perMap(info, 3);
  return PromiseWorker<Loaded>::Run(
      env,
      [path, pinRoot, mapFlags, mapSizes]() {
        LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pinRoot.c_str());
        bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
        if (!obj) fail(errno, "bpf open " + path, recentLog());
        for (const auto& [name, flags] : mapFlags) {
          bpf_map* m = bpf_object__find_map_by_name(obj, name.c_str());
          if (m && bpf_map__set_map_flags(m, flags)) {
            bpf_object__close(obj);
            fail(EINVAL, "bpf set map flags " + name, "");
          }
        }
        for (const auto& [name, size] : mapSizes) {
          bpf_map* m = bpf_object__find_map_by_name(obj, name.c_str());
          if (m && bpf_map__set_max_entries(m, size)) {
            bpf_object__close(obj);
            fail(EINVAL, "bpf set max entries " + name, "");
          }
        }
        int err = bpf_object__load(obj);
        if (err) {
          bpf_object__close(obj);
          fail(err, "bpf load " + path, recentLog());
        }
        Loaded out;
        bpf_program* p;
        bpf_object__for_each_program(p, obj) {
          out.progs.push_back({bpf_program__name(p), bpf_program__section_name(p), bpf_program__fd(p),
                               static_cast<uint32_t>(bpf_program__type(p))});
        }
        bpf_map* m;
        bpf_object__for_each_map(m, obj) {
          out.maps.push_back({bpf_map__name(m), bpf_map__fd(m), static_cast<uint32_t>(bpf_map__type(m)),
                              bpf_map__key_size(m), bpf_map__value_size(m), bpf_map__max_entries(m)});
        }
        std::lock_guard<std::mutex> g(objMu);
        out.id = nextId++;
        objects[out.id] = obj;
        return out;
      },
      [](Napi::Env env, Loaded& l) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", l.id);
        Napi::Array progs = Napi::Array::New(env, l.progs.size());
        for (size_t i = 0; i < l.progs.size(); i++) {
          Napi::Object p = Napi::Object::New(env);
          p.Set("name", l.progs[i].name);
          p.Set("section", l.progs[i].section);
          p.Set("fd", l.progs[i].fd);
          p.Set("type", l.progs[i].type);
          progs.Set(i, p);
        }
        Napi::Array maps = Napi::Array::New(env, l.maps.size());
        for (size_t i = 0; i < l.maps.size(); i++) {
          Napi::Object m = Napi::Object::New(env);
          m.Set("name", l.maps[i].name);
          m.Set("fd", l.maps[i].fd);
          m.Set("type", l.maps[i].type);
          m.Set("keySize", l.maps[i].keySize);
          m.Set("valueSize", l.maps[i].valueSize);
          m.Set("maxEntries", l.maps[i].maxEntries);
          maps.Set(i, m);
        }
        o.Set("programs", progs);
        o.Set("maps", maps);
        return o;
      });
}

Napi::Value ObjectClose(const Napi::CallbackInfo& info) {
  uint32_t id = u32Arg(info, 0, "bpfObjectClose");
  std::lock_guard<std::mutex> g(objMu);
  auto it = objects.find(id);
  if (it != objects.end()) {
    bpf_object__close(it->second);
    objects.erase(it);
  }
  return info.Env().Undefined();
}

// The kernel copies exactly key_size and value_size bytes (a per-CPU value: one 8-byte-aligned slot per
// possible CPU) from or into our buffers, whatever their length: a short buffer would be read or
// written past its end. So every single-entry call checks its buffers against the map itself.
struct MapShape { uint32_t keySize, valueSize; bool percpu; };

MapShape mapShape(Napi::Env env, int fd) {
  bpf_map_info mi = {};
  uint32_t len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len)) throwSys(env, errno, "bpf map info");
  bool percpu = mi.type == BPF_MAP_TYPE_PERCPU_HASH || mi.type == BPF_MAP_TYPE_PERCPU_ARRAY ||
                mi.type == BPF_MAP_TYPE_LRU_PERCPU_HASH || mi.type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
  return {mi.key_size, mi.value_size, percpu};
}

size_t valueBytes(const MapShape& m) {
  return m.percpu ? ((m.valueSize + 7) / 8) * 8 * static_cast<size_t>(libbpf_num_possible_cpus()) : m.valueSize;
}

void checkLen(Napi::Env env, const char* op, const char* what, size_t got, size_t want) {
  if (got != want)
    throw Napi::RangeError::New(env, std::string(op) + ": " + what + " is " + std::to_string(got) + " bytes, the map's is " + std::to_string(want));
}

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapUpdate");
  auto k = bufArg(info, 1, "bpfMapUpdate key");
  auto v = bufArg(info, 2, "bpfMapUpdate value");
  uint64_t flags = info.Length() > 3 ? u32Arg(info, 3, "flags") : static_cast<uint32_t>(BPF_ANY);
  MapShape m = mapShape(info.Env(), fd);
  checkLen(info.Env(), "bpfMapUpdate", "key", k.Length(), m.keySize);
  checkLen(info.Env(), "bpfMapUpdate", "value", v.Length(), valueBytes(m));
  if (bpf_map_update_elem(fd, k.Data(), v.Data(), flags)) throwSys(info.Env(), errno, "bpf map update");
  return info.Env().Undefined();
}

// Many updates in one call: keys and values packed back to back. Returns one errno per entry (0 = ok),
// so the caller can roll back exactly what went in. Works for every map type (LPM tries have no batch op).
// the kernel's internal ENOTSUPP (524), which the bpf syscall can leak to user space
constexpr int ENOTSUPP_ = 524;

Napi::Value MapUpdateMany(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapUpdateMany");
  auto keys = bufArg(info, 1, "keys");
  auto vals = bufArg(info, 2, "values");
  uint32_t ks = u32Arg(info, 3, "keySize"), vs = u32Arg(info, 4, "valueSize");
  if (!ks || !vs || keys.Length() % ks || vals.Length() % vs || keys.Length() / ks != vals.Length() / vs)
    throw Napi::TypeError::New(info.Env(), "bpfMapUpdateMany: key/value buffers do not match the sizes");
  size_t n = keys.Length() / ks;
  auto res = Napi::Int32Array::New(info.Env(), n);
  // BPF_MAP_UPDATE_BATCH where the map has it (hash maps): one syscall for many entries. It stops at the
  // first entry that fails; that entry's own update gives its errno, and the batch goes on after it.
  // Maps without it (LPM tries) answer EINVAL or ENOTSUPP at once and take one syscall per entry.
  size_t i = 0;
  bool batch = n > 1;
  LIBBPF_OPTS(bpf_map_batch_opts, bopts, .elem_flags = BPF_ANY);
  while (batch && i < n) {
    uint32_t count = static_cast<uint32_t>(n - i);
    int err = bpf_map_update_batch(fd, keys.Data() + i * ks, vals.Data() + i * vs, &count, &bopts);
    int e = errno;
    if (!err) {
      for (size_t j = i; j < n; j++) res[j] = 0;
      i = n;
      break;
    }
    if (i == 0 && count == 0 && (e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP || e == ENOTSUPP_)) batch = false;
    else {
      for (size_t j = i; j < i + count; j++) res[j] = 0;
      i += count;
      if (i < n) {
        res[i] = bpf_map_update_elem(fd, keys.Data() + i * ks, vals.Data() + i * vs, BPF_ANY) ? errno : 0;
        i++;
      }
    }
  }
  for (; i < n; i++) res[i] = bpf_map_update_elem(fd, keys.Data() + i * ks, vals.Data() + i * vs, BPF_ANY) ? errno : 0;
  return res;
}

Napi::Value MapDeleteMany(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapDeleteMany");
  auto keys = bufArg(info, 1, "keys");
  uint32_t ks = u32Arg(info, 2, "keySize");
  if (!ks || keys.Length() % ks) throw Napi::TypeError::New(info.Env(), "bpfMapDeleteMany: key buffer does not match the size");
  size_t n = keys.Length() / ks;
  auto res = Napi::Int32Array::New(info.Env(), n);
  for (size_t i = 0; i < n; i++) res[i] = bpf_map_delete_elem(fd, keys.Data() + i * ks) ? errno : 0;
  return res;
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapLookup");
  auto k = bufArg(info, 1, "key");
  uint32_t vs = u32Arg(info, 2, "valueSize");
  MapShape m = mapShape(info.Env(), fd);
  checkLen(info.Env(), "bpfMapLookup", "key", k.Length(), m.keySize);
  checkLen(info.Env(), "bpfMapLookup", "value size", vs, valueBytes(m));
  auto out = Napi::Buffer<uint8_t>::New(info.Env(), vs);
  if (bpf_map_lookup_elem(fd, k.Data(), out.Data())) {
    if (errno == ENOENT) return info.Env().Null();
    throwSys(info.Env(), errno, "bpf map lookup");
  }
  return out;
}

Napi::Value MapKeys(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapKeys");
  uint32_t ks = u32Arg(info, 1, "keySize");
  std::vector<uint8_t> cur(ks), next(ks);
  std::vector<std::vector<uint8_t>> keys;
  bool first = true;
  for (;;) {
    if (bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data())) {
      if (errno == ENOENT) break;
      throwSys(info.Env(), errno, "bpf map get_next_key");
    }
    keys.push_back(next);
    cur = next;
    first = false;
    if (keys.size() > (1u << 22)) break;
  }
  Napi::Array arr = Napi::Array::New(info.Env(), keys.size());
  for (size_t i = 0; i < keys.size(); i++) arr.Set(i, Napi::Buffer<uint8_t>::Copy(info.Env(), keys[i].data(), ks));
  return arr;
}

// bpfMapEntries(fd, keySize, valueSize) -> { keys, values }: every entry, keys and values each packed in
// one Buffer (entry i at i * size). One N-API call instead of one per key and per lookup: reading 5
// maps of 5000 peers took 90 ms through bpfMapKeys + bpfMapLookup. A key deleted between get_next_key
// and its lookup is skipped.
Napi::Value MapEntries(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapEntries");
  uint32_t ks = u32Arg(info, 1, "keySize");
  uint32_t vs = u32Arg(info, 2, "valueSize");
  std::vector<uint8_t> keys, values, cur(ks), next(ks), val(vs);
  // hash maps answer in batches (BPF_MAP_LOOKUP_BATCH): a few syscalls for thousands of entries;
  // LPM tries and arrays of older kernels do not (EINVAL/ENOTSUPP), and take the loop below
  {
    constexpr uint32_t kChunk = 1024;
    std::vector<uint8_t> kb(size_t(ks) * kChunk), vb(size_t(vs) * kChunk), in(std::max<uint32_t>(ks, 8)), out(std::max<uint32_t>(ks, 8));
    LIBBPF_OPTS(bpf_map_batch_opts, bopts);
    bool first = true, batched = true;
    for (;;) {
      uint32_t count = kChunk;
      int err = bpf_map_lookup_batch(fd, first ? nullptr : in.data(), out.data(), kb.data(), vb.data(), &count, &bopts);
      int e = errno;
      if (err && e != ENOENT) {
        if (first && (e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP || e == ENOTSUPP_)) { batched = false; break; }
        throwSys(info.Env(), e, "bpf map lookup batch");
      }
      keys.insert(keys.end(), kb.begin(), kb.begin() + size_t(count) * ks);
      values.insert(values.end(), vb.begin(), vb.begin() + size_t(count) * vs);
      if (err) break;  // ENOENT: that was the last batch
      std::swap(in, out);
      first = false;
    }
    if (batched) {
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("keys", Napi::Buffer<uint8_t>::Copy(info.Env(), keys.data(), keys.size()));
      o.Set("values", Napi::Buffer<uint8_t>::Copy(info.Env(), values.data(), values.size()));
      return o;
    }
    keys.clear();
    values.clear();
  }
  bool first = true;
  size_t n = 0;
  for (;;) {
    if (bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data())) {
      if (errno == ENOENT) break;
      throwSys(info.Env(), errno, "bpf map get_next_key");
    }
    first = false;
    cur = next;
    if (bpf_map_lookup_elem(fd, next.data(), val.data())) {
      if (errno == ENOENT) continue;
      throwSys(info.Env(), errno, "bpf map lookup");
    }
    keys.insert(keys.end(), next.begin(), next.end());
    values.insert(values.end(), val.begin(), val.end());
    if (++n > (1u << 22)) break;
  }
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("keys", Napi::Buffer<uint8_t>::Copy(info.Env(), keys.data(), keys.size()));
  o.Set("values", Napi::Buffer<uint8_t>::Copy(info.Env(), values.data(), values.size()));
  return o;
}

// Re-pins a map the agent still holds after its pin was removed by hand (the programs keep using it).
Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfObjPin");
  if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(info.Env(), "bpfObjPin(fd, path)");
  std::string path = info[1].As<Napi::String>().Utf8Value();
  if (bpf_obj_pin(fd, path.c_str())) throwSys(info.Env(), errno, "bpf obj pin " + path);
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) throwSys(info.Env(), errno, "bpf obj get " + path);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfMapInfo");
  bpf_map_info mi = {};
  uint32_t len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len)) throwSys(info.Env(), errno, "bpf map info");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", mi.id);
  o.Set("name", mi.name);
  o.Set("type", mi.type);
  o.Set("keySize", mi.key_size);
  o.Set("valueSize", mi.value_size);
  o.Set("maxEntries", mi.max_entries);
  o.Set("flags", mi.map_flags);
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfProgInfo");
  bpf_prog_info pi = {};
  uint32_t len = sizeof(pi);
  if (bpf_obj_get_info_by_fd(fd, &pi, &len)) throwSys(info.Env(), errno, "bpf prog info");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  return o;
}

// What runs on a hook is known by id only (tc and XDP queries): its name tells ours from another's.
Napi::Value ProgInfoById(const Napi::CallbackInfo& info) {
  uint32_t id = u32Arg(info, 0, "bpfProgInfoById");
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) {
    if (errno == ENOENT) return info.Env().Null();
    throwSys(info.Env(), errno, "bpf prog get fd by id " + std::to_string(id));
  }
  bpf_prog_info pi = {};
  uint32_t len = sizeof(pi);
  int err = bpf_obj_get_info_by_fd(fd, &pi, &len) ? errno : 0;
  close(fd);
  if (err) throwSys(info.Env(), err, "bpf prog info");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  return o;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close(fdArg(info, 0, "closeFd"));
  return info.Env().Undefined();
}

bpf_tc_hook hookFor(const Napi::CallbackInfo& info, int ifindex, const std::string& dir) {
  if (dir != "ingress" && dir != "egress") throw Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'");
  bpf_tc_hook h = {};
  h.sz = sizeof(h);
  h.ifindex = ifindex;
  h.attach_point = dir == "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  return h;
}

// tc attach on clsact, replacing whatever holds (handle, priority): a restarted agent swaps its
// programs in place, with no moment where the hook is empty.
Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  int ifindex = u32Arg(info, 0, "ifindex");
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  int progFd = fdArg(info, 2, "tcAttach");
  uint32_t handle = u32Arg(info, 3, "handle"), prio = u32Arg(info, 4, "priority");
  bpf_tc_hook h = hookFor(info, ifindex, dir);
  int err = bpf_tc_hook_create(&h);
  if (err && err != -EEXIST) throwSys(info.Env(), err, "tc clsact create on ifindex " + std::to_string(ifindex));
  LIBBPF_OPTS(bpf_tc_opts, o, .prog_fd = progFd, .flags = BPF_TC_F_REPLACE, .handle = handle, .priority = prio);
  err = bpf_tc_attach(&h, &o);
  if (err) throwSys(info.Env(), err, "tc attach " + dir + " on ifindex " + std::to_string(ifindex));
  return Napi::Number::New(info.Env(), o.prog_id);
}

Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  int ifindex = u32Arg(info, 0, "ifindex");
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  uint32_t handle = u32Arg(info, 2, "handle"), prio = u32Arg(info, 3, "priority");
  bpf_tc_hook h = hookFor(info, ifindex, dir);
  LIBBPF_OPTS(bpf_tc_opts, o, .handle = handle, .priority = prio);
  int err = bpf_tc_detach(&h, &o);
  if (err && err != -ENOENT && err != -EINVAL) throwSys(info.Env(), err, "tc detach " + dir + " on ifindex " + std::to_string(ifindex));
  return Napi::Boolean::New(info.Env(), err == 0);
}

Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  int ifindex = u32Arg(info, 0, "ifindex");
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  uint32_t handle = u32Arg(info, 2, "handle"), prio = u32Arg(info, 3, "priority");
  bpf_tc_hook h = hookFor(info, ifindex, dir);
  LIBBPF_OPTS(bpf_tc_opts, o, .handle = handle, .priority = prio);
  int err = bpf_tc_query(&h, &o);
  if (err) return info.Env().Null();
  return Napi::Number::New(info.Env(), o.prog_id);
}

uint32_t xdpFlags(const Napi::CallbackInfo& info, const std::string& mode) {
  if (mode == "native") return XDP_FLAGS_DRV_MODE;
  if (mode == "generic") return XDP_FLAGS_SKB_MODE;
  throw Napi::TypeError::New(info.Env(), "XDP mode must be 'native' or 'generic'");
}

// xdpAttach(ifindex, progFd, mode, replaceId): never takes the hook from a program it was not told
// about. replaceId 0: only if the hook is empty (XDP_FLAGS_UPDATE_IF_NOEXIST, EBUSY otherwise);
// else: only if program replaceId still holds it (XDP_FLAGS_REPLACE, EEXIST otherwise).
Napi::Value XdpAttach(const Napi::CallbackInfo& info) {
  int ifindex = u32Arg(info, 0, "ifindex");
  int progFd = fdArg(info, 1, "xdpAttach");
  std::string mode = info[2].As<Napi::String>().Utf8Value();
  uint32_t replaceId = info.Length() > 3 ? u32Arg(info, 3, "replaceId") : 0;
  uint32_t flags = xdpFlags(info, mode);
  LIBBPF_OPTS(bpf_xdp_attach_opts, o);
  int oldFd = -1;
  if (replaceId) {
    oldFd = bpf_prog_get_fd_by_id(replaceId);
    if (oldFd < 0) throwSys(info.Env(), errno, "xdp attach: program " + std::to_string(replaceId) + " to replace");
    o.old_prog_fd = oldFd;
    flags |= XDP_FLAGS_REPLACE;
  } else {
    flags |= XDP_FLAGS_UPDATE_IF_NOEXIST;
  }
  int err = bpf_xdp_attach(ifindex, progFd, flags, &o);
  if (oldFd >= 0) close(oldFd);
  if (err) throwSys(info.Env(), err, "xdp attach (" + mode + ") on ifindex " + std::to_string(ifindex));
  return info.Env().Undefined();
}

Napi::Value XdpDetach(const Napi::CallbackInfo& info) {
  int ifindex = u32Arg(info, 0, "ifindex");
  std::string mode = info[1].As<Napi::String>().Utf8Value();
  int err = bpf_xdp_detach(ifindex, xdpFlags(info, mode), nullptr);
  if (err && err != -ENOENT) throwSys(info.Env(), err, "xdp detach on ifindex " + std::to_string(ifindex));
  return info.Env().Undefined();
}

Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  int ifindex = u32Arg(info, 0, "ifindex");
  LIBBPF_OPTS(bpf_xdp_query_opts, o);
  int err = bpf_xdp_query(ifindex, 0, &o);
  if (err) throwSys(info.Env(), err, "xdp query on ifindex " + std::to_string(ifindex));
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("attachMode", o.attach_mode);  // 0 none, 1 native, 2 generic, 3 offload
  r.Set("progId", o.prog_id);
  r.Set("driverProgId", o.drv_prog_id);
  r.Set("genericProgId", o.skb_prog_id);
  return r;
}

struct TestRun { int retval; uint32_t duration; std::vector<uint8_t> out; uint32_t mark; };

Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  int fd = fdArg(info, 0, "bpfProgTestRun");
  auto in = bufArg(info, 1, "data");
  uint32_t repeat = u32Arg(info, 2, "repeat");
  auto data = std::make_shared<std::vector<uint8_t>>(in.Data(), in.Data() + in.Length());
  // optional skb context (tc programs only): GSO fields, so that a test can hand a program a
  // super-packet, and the mark, which comes back as the program left it
  auto ctx = std::make_shared<__sk_buff>();
  bool withCtx = false;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object c = info[3].As<Napi::Object>();
    withCtx = true;
    if (c.Has("gsoSize")) ctx->gso_size = c.Get("gsoSize").As<Napi::Number>().Uint32Value();
    if (c.Has("gsoSegs")) ctx->gso_segs = c.Get("gsoSegs").As<Napi::Number>().Uint32Value();
    if (c.Has("mark")) ctx->mark = c.Get("mark").As<Napi::Number>().Uint32Value();
  }
  return PromiseWorker<TestRun>::Run(
      info.Env(),
      [fd, data, repeat, ctx, withCtx]() {
        TestRun r;
        r.out.resize(data->size() + 256);
        LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = data->data(), .data_out = r.out.data(),
                    .data_size_in = static_cast<uint32_t>(data->size()), .data_size_out = static_cast<uint32_t>(r.out.size()));
        __sk_buff ctxOut{};
        if (withCtx) {
          o.ctx_in = ctx.get();
          o.ctx_size_in = sizeof(__sk_buff);
          o.ctx_out = &ctxOut;
          o.ctx_size_out = sizeof(__sk_buff);
        }
        o.repeat = repeat ? static_cast<int>(repeat) : 1;
        int err = bpf_prog_test_run_opts(fd, &o);
        if (err) fail(errno, "bpf prog test run");
        r.retval = static_cast<int>(o.retval);
        r.duration = o.duration;
        r.out.resize(o.data_size_out);
        r.mark = ctxOut.mark;
        return r;
      },
      [](Napi::Env env, TestRun& r) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("retval", r.retval);
        o.Set("durationNs", r.duration);
        o.Set("data", Napi::Buffer<uint8_t>::Copy(env, r.out.data(), r.out.size()));
        o.Set("mark", r.mark);
        return o;
      });
}

Napi::Value DrainLog(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> g(logMu);
  Napi::Array arr = Napi::Array::New(info.Env(), logLines.size());
  for (size_t i = 0; i < logLines.size(); i++) arr.Set(i, logLines[i]);
  logLines.clear();
  return arr;
}

}  // namespace

void InitBpf(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(printFn);
  exports.Set("bpfObjectOpen", Napi::Function::New(env, ObjectOpen));
  exports.Set("bpfObjectClose", Napi::Function::New(env, ObjectClose));
  exports.Set("bpfMapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("bpfMapUpdateMany", Napi::Function::New(env, MapUpdateMany));
  exports.Set("bpfMapDeleteMany", Napi::Function::New(env, MapDeleteMany));
  exports.Set("bpfMapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("bpfMapKeys", Napi::Function::New(env, MapKeys));
  exports.Set("bpfMapEntries", Napi::Function::New(env, MapEntries));
  exports.Set("bpfMapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("bpfProgInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("bpfProgInfoById", Napi::Function::New(env, ProgInfoById));
  exports.Set("bpfObjGet", Napi::Function::New(env, ObjGet));
  exports.Set("bpfObjPin", Napi::Function::New(env, ObjPin));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("tcAttach", Napi::Function::New(env, TcAttach));
  exports.Set("tcDetach", Napi::Function::New(env, TcDetach));
  exports.Set("tcQuery", Napi::Function::New(env, TcQuery));
  exports.Set("xdpAttach", Napi::Function::New(env, XdpAttach));
  exports.Set("xdpDetach", Napi::Function::New(env, XdpDetach));
  exports.Set("xdpQuery", Napi::Function::New(env, XdpQuery));
  exports.Set("bpfProgTestRun", Napi::Function::New(env, ProgTestRun));
  exports.Set("libbpfDrainLog", Napi::Function::New(env, DrainLog));
  exports.Set("numPossibleCpus", Napi::Number::New(env, libbpf_num_possible_cpus()));
}
