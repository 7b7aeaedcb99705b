package normalize

// The LXC field rules. Defaults are the ones pve-container's schema declares
// ($confdesc and the property-string formats). Every table in this file is
// read-only after package initialization.

// lxcNICFormat is $netconf_desc. Proxmox forces type=veth and generates
// hwaddr when it applies the change.
var lxcNICFormat = &Format{
	Keys: map[string]Key{
		"name":      {Required: true},
		"bridge":    {},
		"hwaddr":    {Type: TypeFold, Generated: true},
		"mtu":       {Type: TypeInt},
		"ip":        {},
		"gw":        {},
		"ip6":       {},
		"gw6":       {},
		"firewall":  {Type: TypeBool, Default: "0"},
		"link_down": {Type: TypeBool, Default: "0"},
		"tag":       {Type: TypeInt},
		"trunks":    {Type: TypeSet},
		"rate":      {Type: TypeNumber},
		"type":      {Default: "veth"},
		// host-managed has no schema default; pve-container tests it for
		// truth, so absent is off.
		"host-managed": {Type: TypeBool, Default: "0"},
	},
}

// mountKeys are the keys of $rootfs_desc; mpN adds mp and backup. acl has no
// default: absent means the file system's own default.
func mountKeys(mp bool) map[string]Key {
	keys := map[string]Key{
		"volume":       {},
		"size":         {Type: TypeSize, Generated: true},
		"acl":          {Type: TypeBool},
		"mountoptions": {Type: TypeSet},
		"ro":           {Type: TypeBool, Default: "0"},
		"quota":        {Type: TypeBool, Default: "0"},
		"replicate":    {Type: TypeBool, Default: "1"},
		"shared":       {Type: TypeBool, Default: "0"},
		"keepattrs":    {Type: TypeBool, Default: "0"},
	}
	if mp {
		keys["mp"] = Key{Required: true}
		keys["backup"] = Key{Type: TypeBool, Default: "0"} // mountpoint_backup_enabled
	}
	return keys
}

var (
	rootfsFormat = &Format{DefaultKey: "volume", Keys: mountKeys(false)}
	mpFormat     = &Format{DefaultKey: "volume", Keys: mountKeys(true)}
)

// featuresFormat is $features_desc: booleans that default to 0 and mount, a
// ";" list of file system types.
var featuresFormat = &Format{
	Keys: map[string]Key{
		"mount":        {Type: TypeSet},
		"nesting":      {Type: TypeBool, Default: "0"},
		"keyctl":       {Type: TypeBool, Default: "0"},
		"fuse":         {Type: TypeBool, Default: "0"},
		"mknod":        {Type: TypeBool, Default: "0"},
		"force_rw_sys": {Type: TypeBool, Default: "0"},
	},
}

var lxcFields = map[string]Rule{
	"description": descriptionRule{container: true},

	// Booleans with their schema defaults.
	"onboot":       boolDefault0,
	"template":     boolDefault0,
	"console":      boolDefault1,
	"protection":   boolDefault0,
	"unprivileged": boolDefault0,
	"debug":        boolDefault0,

	// Numbers. cores has no default: absent means every host core.
	"memory":   ValueRule(Key{Type: TypeInt, Default: "512"}),
	"swap":     ValueRule(Key{Type: TypeInt, Default: "512"}),
	"tty":      ValueRule(Key{Type: TypeInt, Default: "2"}),
	"cores":    intNoDef,
	"cpuunits": intNoDef,
	"cpulimit": ValueRule(Key{Type: TypeNumber, Default: "0"}),

	// Enums with schema defaults. ostype has none: Proxmox detects it.
	"arch":  ValueRule(Key{Default: "amd64"}),
	"cmode": ValueRule(Key{Default: "tty"}),

	// Lists: order is resolver priority.
	"nameserver":   orderedList,
	"searchdomain": orderedList,

	"startup":  PropertyRule(startupFormat, false),
	"features": PropertyRule(featuresFormat, true),
	"rootfs":   mountRule{f: rootfsFormat},
}

var lxcFamilies = map[string]Rule{
	"net": PropertyRule(lxcNICFormat, false),
	"mp":  mountRule{f: mpFormat},
}
