package normalize

// The QEMU field rules. Defaults are the ones qemu-server's schema declares
// ($confdesc and the property-string formats), never another tool's. Every
// table in this file is read-only after package initialization.

var (
	boolDefault0 = ValueRule(Key{Type: TypeBool, Default: "0"})
	boolDefault1 = ValueRule(Key{Type: TypeBool, Default: "1"})
	boolNoDef    = ValueRule(Key{Type: TypeBool})
	intNoDef     = ValueRule(Key{Type: TypeInt})
	orderedList  = valueRule{t: TypeList, spaced: true} // nameserver, searchdomain
)

var nicModels = []string{
	"e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e",
	"i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet",
	"rtl8139", "virtio", "vmxnet3",
}

// qemuNICFormat is $net_fmt.
var qemuNICFormat = &Format{
	DefaultKey: "model",
	FoldKey:    "macaddr",
	FoldValues: nicModels,
	Keys: map[string]Key{
		"model":     {},
		"macaddr":   {Type: TypeFold, Generated: true},
		"bridge":    {},
		"queues":    {Type: TypeInt},
		"rate":      {Type: TypeNumber},
		"tag":       {Type: TypeInt},
		"trunks":    {Type: TypeSet},
		"firewall":  {Type: TypeBool, Default: "0"},
		"link_down": {Type: TypeBool, Default: "0"},
		"mtu":       {Type: TypeInt},
	},
}

// driveFormat is $alldrive_fmt with allocation: every key of ideN, sataN,
// scsiN, virtioN, efidisk0 and tpmstate0. Two booleans without a schema
// default get the one the code gives them: an absent detect_zeroes is on
// (qemu-server passes detect-zeroes=on, or unmap with discard=on, unless
// detect_zeroes is explicitly 0) and an absent ro is off.
var driveFormat = &Format{
	DefaultKey: "file",
	Aliases: map[string]string{
		"volume":         "file",
		"bps_rd_length":  "bps_rd_max_length",
		"bps_wr_length":  "bps_wr_max_length",
		"iops_rd_length": "iops_rd_max_length",
		"iops_wr_length": "iops_wr_max_length",
	},
	Keys: map[string]Key{
		"file":               {},
		"media":              {Default: "disk"},
		"cyls":               {Type: TypeInt}, // cyls to trans: see droppedDriveKeys
		"heads":              {Type: TypeInt},
		"secs":               {Type: TypeInt},
		"trans":              {},
		"snapshot":           {Type: TypeBool},
		"cache":              {},
		"format":             {},
		"size":               {Type: TypeSize, Generated: true},
		"backup":             {Type: TypeBool, Default: "1"},
		"replicate":          {Type: TypeBool, Default: "1"},
		"rerror":             {},
		"werror":             {},
		"aio":                {},
		"discard":            {Default: "ignore"},
		"detect_zeroes":      {Type: TypeBool, Default: "1"}, // detect_zeroes_cmdline_option: absent is on
		"serial":             {},
		"shared":             {Type: TypeBool, Default: "0"},
		"iothread":           {Type: TypeBool, Default: "0"},
		"product":            {},
		"vendor":             {},
		"model":              {},
		"queues":             {Type: TypeInt},
		"ro":                 {Type: TypeBool, Default: "0"}, // read-only is ro || cdrom
		"scsiblock":          {Type: TypeBool, Default: "0"},
		"ssd":                {Type: TypeBool, Default: "0"},
		"wwn":                {Type: TypeFold},
		"mbps":               {Type: TypeNumber},
		"mbps_rd":            {Type: TypeNumber},
		"mbps_wr":            {Type: TypeNumber},
		"mbps_max":           {Type: TypeNumber},
		"mbps_rd_max":        {Type: TypeNumber},
		"mbps_wr_max":        {Type: TypeNumber},
		"iops":               {Type: TypeInt},
		"iops_rd":            {Type: TypeInt},
		"iops_wr":            {Type: TypeInt},
		"iops_max":           {Type: TypeInt},
		"iops_rd_max":        {Type: TypeInt},
		"iops_wr_max":        {Type: TypeInt},
		"bps_max_length":     {Type: TypeInt},
		"bps_rd_max_length":  {Type: TypeInt},
		"bps_wr_max_length":  {Type: TypeInt},
		"iops_max_length":    {Type: TypeInt},
		"iops_rd_max_length": {Type: TypeInt},
		"iops_wr_max_length": {Type: TypeInt},
		"import-from":        {},
		// efidisk0
		"efitype":           {Default: "2m"},
		"pre-enrolled-keys": {Type: TypeBool, Default: "0"},
		"ms-cert":           {Default: "2011", Generated: true}, // added by create_efidisk
		// tpmstate0
		"version": {Default: "v1.2"},
	},
}

// unusedFormat is $unused_fmt.
var unusedFormat = &Format{
	DefaultKey: "file",
	Aliases:    map[string]string{"volume": "file"},
	Keys:       map[string]Key{"file": {}},
}

// agentFormat is $agent_fmt; freeze-fs-on-backup and guest-fsfreeze are
// aliases of freeze-fs since qemu-server 9 (A12).
var agentFormat = &Format{
	DefaultKey: "enabled",
	Aliases: map[string]string{
		"freeze-fs-on-backup": "freeze-fs",
		"guest-fsfreeze":      "freeze-fs",
	},
	Keys: map[string]Key{
		"enabled":             {Type: TypeBool, Default: "0"},
		"fstrim_cloned_disks": {Type: TypeBool, Default: "0"},
		"freeze-fs":           {Type: TypeBool, Default: "1"},
		"type":                {Default: "virtio"},
	},
}

// cpuFormat is $cpu_fmt. An absent cpu is kvm64 (get_default_cpu_type with
// KVM; qemu64 only with kvm=0, which this per-field rule cannot see).
var cpuFormat = &Format{
	DefaultKey: "cputype",
	Keys: map[string]Key{
		"cputype":         {Default: "kvm64"},
		"reported-model":  {},
		"hidden":          {Type: TypeBool, Default: "0"},
		"hv-vendor-id":    {},
		"flags":           {Type: TypeSet},
		"phys-bits":       {},
		"guest-phys-bits": {Type: TypeInt},
	},
}

// memoryFormat is $memory_fmt (qemu-server 8.0.8 and later; a bare integer
// before, which parses the same).
var memoryFormat = &Format{
	DefaultKey: "current",
	Keys:       map[string]Key{"current": {Type: TypeInt, Default: "512"}},
}

// startupFormat follows pve_parse_startup_order: "[order=]N,up=N,down=N".
var startupFormat = &Format{
	DefaultKey: "order",
	Keys: map[string]Key{
		"order": {Type: TypeInt},
		"up":    {Type: TypeInt},
		"down":  {Type: TypeInt},
	},
}

var ipconfigFormat = &Format{
	Keys: map[string]Key{"ip": {}, "gw": {}, "ip6": {}, "gw6": {}},
}

var smbios1Format = &Format{
	Keys: map[string]Key{
		"uuid":         {Type: TypeFold, Generated: true},
		"base64":       {Type: TypeBool, Default: "0"},
		"family":       {},
		"manufacturer": {},
		"product":      {},
		"serial":       {},
		"sku":          {},
		"version":      {},
	},
}

var metaFormat = &Format{
	Keys: map[string]Key{
		"creation-qemu": {Generated: true},
		"ctime":         {Generated: true},
	},
}

// vgaFormat: the default type depends on ostype (A13), so none is assumed.
var vgaFormat = &Format{
	DefaultKey: "type",
	Keys: map[string]Key{
		"type":      {},
		"memory":    {Type: TypeInt},
		"clipboard": {},
	},
}

var watchdogFormat = &Format{
	DefaultKey: "model",
	Keys: map[string]Key{
		"model":  {Default: "i6300esb"},
		"action": {},
	},
}

var spiceFormat = &Format{
	Keys: map[string]Key{
		"foldersharing":  {Type: TypeBool, Default: "0"},
		"videostreaming": {Default: "off"},
	},
}

var audioFormat = &Format{
	Keys: map[string]Key{
		"device": {Required: true},
		"driver": {Default: "spice"},
	},
}

var cicustomFormat = &Format{
	Keys: map[string]Key{"meta": {}, "network": {}, "user": {}, "vendor": {}},
}

var numaNodeFormat = &Format{
	Keys: map[string]Key{
		"cpus":      {Required: true},
		"hostnodes": {},
		"memory":    {Type: TypeNumber},
		"policy":    {},
	},
}

var qemuFields = map[string]Rule{
	"description": descriptionRule{},

	// Booleans with their schema defaults.
	"onboot":        boolDefault0,
	"autostart":     boolDefault0,
	"reboot":        boolDefault1,
	"acpi":          boolDefault1,
	"kvm":           boolDefault1,
	"tdf":           boolDefault0,
	"numa":          boolDefault0,
	"keephugepages": boolDefault0,
	"template":      boolDefault0,
	"tablet":        boolDefault1,
	"protection":    boolDefault0,
	"ciupgrade":     boolDefault1,
	"localtime":     boolNoDef, // default depends on ostype
	"freeze":        boolNoDef,

	// Numbers.
	"cores":            ValueRule(Key{Type: TypeInt, Default: "1"}),
	"sockets":          ValueRule(Key{Type: TypeInt, Default: "1"}),
	"smp":              ValueRule(Key{Type: TypeInt, Default: "1"}),
	"vcpus":            intNoDef,
	"balloon":          intNoDef, // absent = balloon on, 0 = off
	"shares":           ValueRule(Key{Type: TypeInt, Default: "1000"}),
	"cpuunits":         intNoDef, // default depends on the cgroup version
	"migrate_speed":    ValueRule(Key{Type: TypeInt, Default: "0"}),
	"cpulimit":         ValueRule(Key{Type: TypeNumber, Default: "0"}),
	"migrate_downtime": ValueRule(Key{Type: TypeNumber, Default: "0.1"}),
	"memory":           PropertyRule(memoryFormat, true),

	// Enums with schema defaults.
	"ostype":    ValueRule(Key{Default: "other"}),
	"scsihw":    ValueRule(Key{Default: "lsi"}),
	"bios":      ValueRule(Key{Default: "seabios"}),
	"startdate": ValueRule(Key{Default: "now"}),

	// Lists.
	"hotplug":      hotplugRule{},
	"nameserver":   orderedList,
	"searchdomain": orderedList,

	// Property strings.
	"agent":              PropertyRule(agentFormat, true),
	"cpu":                PropertyRule(cpuFormat, true),
	"boot":               bootRule{},
	"startup":            PropertyRule(startupFormat, false),
	"smbios1":            PropertyRule(smbios1Format, false),
	"meta":               &propRule{f: metaFormat, allGenerated: true},
	"vga":                PropertyRule(vgaFormat, false),
	"watchdog":           PropertyRule(watchdogFormat, false),
	"spice_enhancements": PropertyRule(spiceFormat, true),
	"audio0":             PropertyRule(audioFormat, false),
	"cicustom":           PropertyRule(cicustomFormat, false),

	// Disks that are not in a numbered family.
	"efidisk0":  driveRule{kind: driveFixed},
	"tpmstate0": driveRule{kind: driveFixed},
	"cdrom":     driveRule{kind: driveCDField},

	// Cloud-init and server-generated values.
	"sshkeys":    sshKeysRule{},
	"cipassword": maskedRule{},
	"vmgenid":    vmgenidRule{},
}

var qemuFamilies = map[string]Rule{
	"net":      nicRule{f: qemuNICFormat},
	"ide":      driveRule{kind: driveDisk},
	"sata":     driveRule{kind: driveDisk},
	"scsi":     driveRule{kind: driveDisk},
	"virtio":   driveRule{kind: driveDisk},
	"unused":   PropertyRule(unusedFormat, false),
	"ipconfig": PropertyRule(ipconfigFormat, false),
	"numa":     PropertyRule(numaNodeFormat, false),
}
